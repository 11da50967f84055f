"""`engine.data` of a `RemoteEngine`: the service's historian tables over `/data/*`.

Pages and query results come as Arrow IPC and are Polars frames again here. Exports write a file on
this machine: a frame the client already holds is written locally (`export_frame`); a whole table
is downloaded from the service (`export_object`), streamed into a temporary file beside the target
and renamed over it once complete, so a failed export leaves no partial file.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from engine.api.core import Job
from engine.api.remote.client import ServiceClient, ServiceUnavailable, error_of
from engine.api.remote.wire import frame, get_frame
from engine.errors import DataError


def _object_path(name: str) -> str:
    return "/data/objects/" + quote(name, safe="")


class RemoteData:
    """The data part of a `RemoteEngine` (`engine.data`)."""

    def __init__(self, client: ServiceClient):
        self._client = client

    def objects(self) -> list[dict[str, Any]]:
        """The service historian's tables and views: name, schema, kind, estimated rows, columns."""
        return self._client.get("/data/objects")

    def preview_object(self, name: str, offset: int = 0, limit: int = 200) -> dict[str, Any]:
        """One page of a table or view: `{"frame", "offset", "total"}`."""
        page, headers = get_frame(self._client, _object_path(name), offset=offset, limit=limit)
        return {
            "frame": page,
            "offset": int(headers.get("x-offset", offset)),
            "total": int(headers["x-total"]),
        }

    def sql(self, sql: str, limit: int = 10_000) -> dict[str, Any]:
        """One read-only statement on the service's historian: `{"frame", "truncated", "rows"}`."""
        response = self._client.send("POST", "/data/sql", json={"sql": sql, "limit": limit})
        result = frame(response)
        return {
            "frame": result,
            "truncated": response.headers.get("x-truncated") == "true",
            "rows": int(response.headers.get("x-rows", result.height)),
        }

    def export_frame(self, data, path: Path | str, fmt: str | None = None) -> Job[Path]:
        """Write a frame this client holds to a file here (csv, parquet, xlsx), in the background."""
        from engine.api.data import write_frame

        return self._job(lambda: write_frame(data, path, fmt))

    def export_object(self, name: str, path: Path | str, fmt: str | None = None) -> Job[Path]:
        """A whole table or view of the service, downloaded to a file here, in the background."""
        return self._job(lambda: self._download(name, Path(path), fmt))

    def _download(self, name: str, path: Path, fmt: str | None) -> Path:
        from engine.api.data import export_format

        fmt = export_format(path, fmt)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{fmt}", dir=path.parent)
        except OSError as exc:
            raise DataError(f"export to {path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                http: httpx.Client = self._client._http
                try:
                    with http.stream(
                        "GET", _object_path(name) + "/export", params={"format": fmt}, timeout=None
                    ) as response:
                        if response.status_code >= 400:
                            response.read()
                            raise error_of(response)
                        for chunk in response.iter_bytes(1 << 20):
                            out.write(chunk)
                except httpx.TransportError as exc:
                    raise ServiceUnavailable(
                        f"{self._client.url}: the download of {name} broke off ({str(exc) or type(exc).__name__})"
                    ) from None
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise
        return path

    def _job(self, work) -> Job[Path]:
        future: concurrent.futures.Future[Path] = self._client.call(work)
        return Job("export", future, threading.Event())
