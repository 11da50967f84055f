"""`UsersAPI` and `AuditAPI` over the service's `/auth`, `/users` and `/audit` routes
(app/http/routes_auth.py), and `login(url, ...)`: a token pair before there is a client."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from engine.api.remote.client import ServiceClient


class RemoteUsers:
    def __init__(self, client: ServiceClient):
        self._client = client

    def has_users(self) -> bool:
        return bool(self._client.get("/auth/status").get("users"))

    def list(self) -> list[dict[str, Any]]:
        return self._client.get("/users")

    def add(self, name: str, role: str, password: str) -> dict[str, Any]:
        return self._client.post("/users", {"name": name, "role": role, "password": password})

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        return self._client.request("PUT", f"/users/{quote(name, safe='')}/role", json={"role": role})

    def set_password(self, name: str, password: str) -> None:
        self._client.request("PUT", f"/users/{quote(name, safe='')}/password", json={"password": password})

    def delete(self, name: str) -> bool:
        from engine.errors import DataError

        try:
            self._client.request("DELETE", f"/users/{quote(name, safe='')}")
        except DataError:  # 404
            return False
        return True

    def me(self) -> dict[str, Any]:
        return self._client.get("/auth/me")

    def login(
        self, username: str, password: str, client: str | None = None, source: str = "api"
    ) -> dict[str, Any]:
        return self._client.post("/auth/login", {"username": username, "password": password})

    def refresh(self, refresh_token: str, client: str | None = None, source: str = "api") -> dict[str, Any]:
        return self._client.post("/auth/refresh", {"refresh_token": refresh_token})


class RemoteAudit:
    def __init__(self, client: ServiceClient):
        self._client = client

    def list(
        self,
        user: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        outcome: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        return self._client.get(
            "/audit", user=user, action=action, since=since, until=until, outcome=outcome, limit=limit
        )

    def verify(self) -> dict[str, Any]:
        return self._client.get("/audit/verify")


def login(
    url: str, username: str, password: str, timeout: float = 30.0, source: str | None = None
) -> dict[str, Any]:
    """`POST url/auth/login`: {access_token, token_type, expires_in, refresh_token, user, role};
    AccessDenied (one line, exit 3) for a wrong password, a locked account or too many attempts."""
    from engine.api.remote.engine import SOURCE_HEADER

    client = ServiceClient(url, "anonymous", timeout=timeout)  # the login routes take no token
    if source:
        client._http.headers[SOURCE_HEADER] = source  # cli or gui, for the audit trail
    try:
        return client.post("/auth/login", {"username": username, "password": password})
    finally:
        client.close()


def has_users(url: str, timeout: float = 10.0) -> bool:
    """Whether the service at `url` has users (then a client asks for a login)."""
    client = ServiceClient(url, "anonymous", timeout=timeout)  # the login routes take no token
    try:
        return bool(client.get("/auth/status").get("users"))
    finally:
        client.close()
