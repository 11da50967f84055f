"""Arrow answers of the service (app/http/arrow.py) read back into Polars frames, for the live and
data sub-APIs of `RemoteEngine`. The JSON calls go through `ServiceClient.request`; these need the
raw body (and its headers), from `ServiceClient.send` with the same errors."""

from __future__ import annotations

import io
from typing import Any

import httpx

from engine.api.remote.client import ServiceClient, ServiceUnavailable

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def when(moment: Any) -> str | None:
    """A time as a query parameter: a datetime as ISO 8601 text, text as it is (None: left off)."""
    return moment if moment is None or isinstance(moment, str) else moment.isoformat()


def frame(response: httpx.Response):
    """An Arrow IPC stream answer as a Polars frame."""
    import polars as pl

    kind = response.headers.get("content-type", "")
    if not kind.startswith(ARROW_STREAM):
        raise ServiceUnavailable(
            f"{response.request.url.copy_with(query=None)}: the service answered {kind or 'no content type'},"
            f" not {ARROW_STREAM} (an older service?)"
        )
    return pl.read_ipc_stream(io.BytesIO(response.content))


def get_frame(client: ServiceClient, path: str, **params: Any):
    """(frame, headers) of a GET answering Arrow."""
    response = client.send("GET", path, params={k: v for k, v in params.items() if v is not None})
    return frame(response), response.headers
