"""`ConnectorsAPI` over the service's `/connectors` routes."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from engine.api.core import Job
from engine.api.remote.client import RemoteError, ServiceClient


def _not_served(what: str) -> RemoteError:
    return RemoteError(f"{what}: not offered by the service's API (run it on the service's machine)", 501)


def _without_id(connector: dict[str, Any]) -> dict[str, Any]:
    """A connector as the service answers it, without the route's `id` (a local engine has none)."""
    return {k: v for k, v in connector.items() if k != "id"}


def _registry():
    """Connector types, schemas and config checks read the code's registry, no data directory: the
    GUI (Connectors page, editor forms) gets them here, as the service would answer them."""
    from engine.api.connectors import LocalConnectors

    return LocalConnectors(None)  # type: ignore[arg-type] - these calls never touch the core


class RemoteConnectors:
    def __init__(self, client: ServiceClient):
        self._client = client

    def types(self) -> list[dict[str, Any]]:
        return _registry().types()  # the registry is code: the same here as in the service

    def schema(self, connector_type: str, role: str) -> dict[str, Any]:
        return _registry().schema(connector_type, role)

    def list(self) -> list[dict[str, Any]]:
        return [_without_id(c) for c in self._client.get("/connectors")]

    def get(self, name: str) -> dict[str, Any] | None:
        from engine.errors import DataError

        try:
            found = self._client.get(f"/connectors/{name}")
        except DataError:
            return None
        return _without_id(found)

    def check(self, connector_type: str, role: str, config: dict[str, Any]) -> list[dict[str, str]]:
        return _registry().check(connector_type, role, config)  # no I/O: checked here

    def save(
        self,
        name: str,
        connector_type: str,
        role: str,
        config: dict[str, Any],
        previous_name: str | None = None,
    ) -> dict[str, Any]:
        body = {"connector_type": connector_type, "role": role, "config": config}
        if previous_name is not None:
            saved = self._client.request("PUT", f"/connectors/{previous_name}", json={**body, "name": name})
        elif self.get(name) is not None:
            saved = self._client.request("PUT", f"/connectors/{name}", json=body)
        else:
            saved = self._client.post("/connectors", {**body, "name": name})
        return _without_id(saved)

    def delete(self, name: str) -> bool:
        from engine.errors import DataError

        try:
            self._client.request("DELETE", f"/connectors/{name}")
        except DataError:
            return False
        return True

    def test(
        self, connector_type: str, role: str, config: dict[str, Any], name: str = "test"
    ) -> Job[dict[str, Any]]:
        """Tests the saved connector `name` (the service tests what it has stored)."""
        cancel = threading.Event()

        def work() -> dict[str, Any]:
            answer = self._client.post(f"/connectors/{name}/test")
            return {k: v for k, v in answer.items() if k != "name"}

        future: concurrent.futures.Future[dict[str, Any]] = self._client.call(work)
        return Job("test", future, cancel)

    def browse_opcua(self, config: dict[str, Any], node_id: str | None = None) -> Job[list[dict[str, Any]]]:
        raise _not_served("OPC UA browsing")

    # ---- secrets: set, deleted and listed by name; the service never answers a value -----------
    def secret_names(self) -> list[str]:
        return [item["name"] for item in self._client.get("/secrets")]

    def set_secret(self, name: str, value: str, use_keyring: bool = True) -> str:
        """Stored in the service's keyring or encrypted file (where it went); the value goes over
        the API once, in the request body."""
        body = {"value": value, "use_keyring": use_keyring}
        return self._client.request("PUT", f"/secrets/{_quoted(name)}", json=body)["stored_in"]

    def check_secret(self, name: str) -> None:
        from engine.errors import SecretError

        answer = self._client.get(f"/secrets/{_quoted(name)}")
        if not answer.get("set"):
            raise SecretError(answer.get("error") or f"secret '{name}' is not set in the service")

    def delete_secret(self, name: str) -> bool:
        from engine.errors import DataError

        try:
            self._client.request("DELETE", f"/secrets/{_quoted(name)}")
        except DataError:  # 404: none was stored
            return False
        return True


def _quoted(name: str) -> str:
    """A name as one path segment of a URL."""
    from urllib.parse import quote

    return quote(name, safe="")
