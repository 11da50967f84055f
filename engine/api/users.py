"""`engine.users` and `engine.audit`: local users, logins and the audit trail (engine/auth/).

    engine.users.add("ana", "editor", password)       # admin (through a principal's view)
    tokens = engine.users.login("ana", password, client="10.0.0.7")
    principal = engine.users.authenticate(tokens["access_token"])
    engine.as_principal(principal).pipelines.save(...)  # checked, audited (engine/auth/guard.py)
    engine.audit.list(user="ana"); engine.audit.verify()

Logins are audited here (they have no principal yet); every other change is audited by the
principal's view, which also refuses what the role may not do.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from engine.auth import audit as audit_trail
from engine.auth import tokens
from engine.auth.principal import LoginFailed, Principal, local_admin
from engine.auth.users import UserStore

RETENTION_ENV = "AGGREGATOR_AUDIT_RETENTION_DAYS"
to_csv = audit_trail.to_csv


def retention_days() -> int:
    """The audit trail's retention: $AGGREGATOR_AUDIT_RETENTION_DAYS, else seven years."""
    text = os.environ.get(RETENTION_ENV)
    if not text:
        return audit_trail.DEFAULT_RETENTION_DAYS
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        from engine.errors import UsageError

        raise UsageError(f"${RETENTION_ENV}: '{text}' (allowed: a whole number of days, at least 1)")
    return days


class LocalUsers:
    """Users of this data directory; logins answer {access_token, token_type, expires_in,
    refresh_token}."""

    def __init__(self, data_dir: Path, store: UserStore, audit: audit_trail.AuditLog):
        self._data_dir = Path(data_dir)
        self._store = store
        self._audit = audit
        self._key: str | None = None
        self._key_lock = threading.Lock()

    def _signing_key(self) -> str:
        with self._key_lock:
            if self._key is None:
                self._key = tokens.signing_key(self._data_dir)
            return self._key

    # ---- managing (admin through a principal's view) -----------------------------------------
    def has_users(self) -> bool:
        return self._store.count() > 0

    def list(self) -> list[dict[str, Any]]:
        return self._store.list()

    def add(self, name: str, role: str, password: str) -> dict[str, Any]:
        return self._store.add(name, role, password)

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        return self._store.set_role(name, role)

    def set_password(self, name: str, password: str) -> None:
        self._store.set_password(name, password)

    def delete(self, name: str) -> bool:
        return self._store.delete(name)

    def me(self) -> dict[str, Any]:
        """Who this engine acts for: in process without a principal, the local OS user as admin."""
        return local_admin().to_dict()

    # ---- logging in --------------------------------------------------------------------------
    def _pair(self, user: str, role: str, family: str | None = None) -> dict[str, Any]:
        return {
            "access_token": tokens.issue(self._signing_key(), user, role),
            "token_type": "bearer",
            "expires_in": tokens.ACCESS_TTL_S,
            "refresh_token": self._store.new_refresh(user, family),
            "user": user,
            "role": role,
        }

    def login(
        self, username: str, password: str, client: str | None = None, source: str = "api"
    ) -> dict[str, Any]:
        """Tokens for a right password; LoginFailed otherwise. Every attempt is audited, and a
        lockout too."""
        where = {"user": username, "source": source, "client": client, "target": username}
        try:
            user, _ = self._store.check_login(username, password)
        except LoginFailed as exc:
            self._audit.record("auth.login", role=None, outcome="failed", reason=exc.one_line(), **where)
            if getattr(exc, "locked", False):
                self._audit.record(
                    "auth.lockout", role=None, outcome="ok", reason="5 failed logins in a row", **where
                )
            raise
        self._audit.record("auth.login", role=user["role"], outcome="ok", **where)
        return self._pair(user["name"], user["role"])

    def refresh(self, refresh_token: str, client: str | None = None, source: str = "api") -> dict[str, Any]:
        """A new pair for a valid refresh token, which is spent (rotation)."""
        try:
            name, family = self._store.spend_refresh(refresh_token)
            user = self._store.get(name)
        except LoginFailed as exc:
            reused = getattr(exc, "reused", None)
            self._audit.record(
                "auth.refresh", user=reused, role=None, source=source, client=client, outcome="failed",
                reason=exc.one_line(),
            )  # fmt: skip
            raise
        except Exception:
            raise LoginFailed("the refresh token's user no longer exists: log in again") from None
        return self._pair(user["name"], user["role"], family)

    def authenticate(self, access_token: str, client: str | None = None, source: str = "api") -> Principal:
        """The principal of a valid access token, with the user's role of now (a role change or a
        deleted user takes effect at once); LoginFailed otherwise."""
        claims = tokens.verify(self._signing_key(), access_token)
        try:
            user = self._store.get(claims["sub"])
        except Exception:
            raise LoginFailed(f"user '{claims['sub']}' no longer exists") from None
        return Principal(user["name"], user["role"], source, client)


def _moment(text: str | None, where: str) -> str | None:
    """An ISO 8601 time or date (UTC when it names no offset) as the audit trail writes times."""
    if not text:
        return None
    from datetime import UTC, datetime

    from engine.errors import UsageError
    from engine.runs.timefmt import iso_utc

    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{where}: '{text}' is not a time (allowed: ISO 8601, e.g. 2026-01-31 or 2026-01-31T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_utc(moment)


class LocalAudit:
    """The audit trail: newest first, filtered; its chain verified."""

    def __init__(self, log: audit_trail.AuditLog):
        self._log = log

    def list(
        self,
        user: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        outcome: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        return self._log.entries(
            user, action, _moment(since, "since"), _moment(until, "until"), outcome, limit
        )

    def verify(self) -> dict[str, Any]:
        return self._log.verify()

    def record(self, action: str, principal: Principal, **fields: Any) -> dict[str, Any]:
        return self._log.record(
            action,
            user=principal.user,
            role=principal.role,
            source=principal.source,
            client=principal.client,
            **fields,
        )


__all__ = ["LocalAudit", "LocalUsers", "retention_days", "to_csv"]
