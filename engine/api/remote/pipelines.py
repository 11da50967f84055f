"""`PipelinesAPI` over the service's `/pipelines`, `/validate` and `/transformations` routes.

A pipeline is named by its path in the Protocol and by its id on the wire (`<stem>` for the user's
own, `example:<stem>` / `template:<stem>` for shipped ones); the list maps one to the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api.remote.client import ServiceClient

_ENTRY_KEYS = ("path", "origin", "name", "description", "mode", "modified", "error", "last_run")


class RemotePipelines:
    def __init__(self, client: ServiceClient):
        self._client = client

    def _items(self) -> list[dict[str, Any]]:
        return self._client.get("/pipelines")

    def _id_of(self, path: str | Path) -> str | None:
        wanted = str(path)
        for item in self._items():
            if item.get("path") == wanted:
                return item["id"]
        return None

    def _known_id(self, path: str | Path) -> str:
        pid = self._id_of(path)
        if pid is None:
            from engine.errors import DataError

            raise DataError(f"{path}: no such pipeline on the service (GET /pipelines lists them)")
        return pid

    def list(self) -> list[dict[str, Any]]:
        return [{k: item.get(k) for k in _ENTRY_KEYS} for item in self._items()]

    def read(self, path: str | Path) -> dict[str, Any]:
        pid = self._id_of(path)
        if pid is None and Path(path).is_file():
            # A file on this machine (the editor's Open dialog): read here, and "shipped" so that
            # saving asks where; `save` then sends it to the service.
            from engine.api.pipelines import LocalPipelines

            return {**LocalPipelines(None).read(path), "shipped": True}  # type: ignore[arg-type]
        got = self._client.get(f"/pipelines/{pid if pid is not None else self._known_id(path)}")
        return {"document": got["document"], "form": got.get("form"), "shipped": bool(got.get("read_only"))}

    def open(self, path: str | Path) -> dict[str, Any]:
        return self.read(path)["document"]

    def save(self, path: str | Path, doc: dict[str, Any]) -> int:
        pid = self._id_of(path)
        if pid is None:
            saved = self._client.post("/pipelines", doc, id=Path(path).stem)
        else:
            saved = self._client.request("PUT", f"/pipelines/{pid}", json=doc)
        return int(saved.get("version") or 0)

    def delete(self, path: str | Path) -> None:
        self._client.request("DELETE", f"/pipelines/{self._known_id(path)}")

    def validate(self, doc: Any) -> list[dict[str, Any]]:
        return list(self._client.post("/validate", doc).get("issues") or [])

    def load(self, path: str | Path) -> dict[str, Any]:
        """A spec file on this machine, read and checked here (it needs no data directory)."""
        from engine.api.pipelines import load_spec

        return load_spec(path)

    def node_types(self) -> list[dict[str, Any]]:
        """The editor's palette: the code's registries (no data directory), as the service has them."""
        from engine.api.pipelines import LocalPipelines

        return LocalPipelines(None).node_types()  # type: ignore[arg-type] - never touches the core

    def transformations(self) -> list[dict[str, Any]]:
        return self._client.get("/transformations")

    def templates(self) -> list[dict[str, Any]]:
        return [
            {"name": i.get("name"), "title": i.get("name"), "path": i.get("path")}
            for i in self._items()
            if i.get("origin") == "template"
        ]

    def folder(self) -> Path:
        return Path(self._client.get("/health").get("data_dir", "")) / "pipelines"

    def install_demo(self) -> dict[str, Any]:
        """Installed in the service's data directory (`POST /demo`): its `spec_path` is a path on the
        service's machine, which `runs.start(document, spec_path=...)` hands back to the service."""
        return self._client.post("/demo")
