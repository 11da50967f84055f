"""Local users in the data directory's metadata.db: argon2id password hashes, a password policy,
lockout after repeated failures, and rotating refresh tokens.

- Passwords are hashed with argon2id (`ARGON2`: OWASP's 19 MiB, 2 passes) and never stored,
  logged or returned in clear. A hash made with other parameters is re-hashed at the next good
  login.
- Policy: at least `MIN_PASSWORD_CHARS` characters, and not the user name (either way round, any
  case).
- Lockout: `MAX_FAILURES` failures in a row lock the account for `LOCKOUT_S` seconds; a login while
  locked is refused without checking the password. A good login clears the count.
- Refresh tokens: random, stored as sha256 only, valid `REFRESH_TTL_S`, one use each: a refresh
  answers a new pair and spends the old token. A spent token presented again means it was stolen
  (or replayed): the whole family of tokens from that login is revoked.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets as _random
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.auth.principal import ROLES, LoginFailed, check_role
from engine.errors import AggregatorError, UsageError
from engine.runs.timefmt import iso_utc, now_iso

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
MAX_FAILURES = 5
LOCKOUT_S = 5 * 60
REFRESH_TTL_S = 8 * 3600
USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0, locked_until REAL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, family TEXT NOT NULL,
    expires_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
"""


class UserNotFound(AggregatorError):
    pass


class UserExists(AggregatorError):
    pass


# argon2id at OWASP's first recommended setting (19 MiB, 2 passes, 1 lane). argon2-cffi's default
# (64 MiB, 3 passes, 4 lanes) took 0.96 s a hash against 0.27 s on the 2-core test machine at a load
# average of 18 (median of 5): on an edge box a few logins a second would starve the pipelines.
ARGON2 = {"time_cost": 2, "memory_cost": 19 * 1024, "parallelism": 1}


def _hasher():
    from argon2 import PasswordHasher, Type

    return PasswordHasher(**ARGON2, type=Type.ID)


def check_password(name: str, password: str) -> None:
    """The policy: UsageError with one line saying what is allowed."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise UsageError(f"password: too short (allowed: at least {MIN_PASSWORD_CHARS} characters)")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UsageError(f"password: too long (allowed: at most {MAX_PASSWORD_CHARS} characters)")
    lowered = password.lower()
    if lowered in (name.lower(), name.lower()[::-1]):
        raise UsageError("password: it is the user name (allowed: anything else)")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise UsageError(
            f"user name '{str(name)[:80]}': not allowed (allowed: 1-64 of letters, digits, _ . @ -, not starting with . @ -)"
        )
    return name


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class UserStore:
    """The users of one data directory, on a connection of its own to metadata.db."""

    def __init__(self, db_path: Path | str):
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._conn.executescript(SCHEMA)
        self._dummy_hash: str | None = None

    # ---- managing ----------------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM users").fetchone()[0]

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM users ORDER BY name").fetchall()
        return [_public(r) for r in rows]

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._conn.execute("SELECT * FROM users WHERE name = ?", [name]).fetchone()
        if row is None:
            raise UserNotFound(f"user '{name}' not found (`aggregator users list` lists them)")
        return _public(row)

    def add(self, name: str, role: str, password: str) -> dict[str, Any]:
        check_name(name)
        check_role(role)
        check_password(name, password)
        digest = _hasher().hash(password)
        now = now_iso()
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    [name, role, digest, now, now],
                )
            except sqlite3.IntegrityError:
                raise UserExists(
                    f"user '{name}' exists already (`aggregator users set-role` changes its role)"
                ) from None
        return self.get(name)

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        check_role(role)
        before = self.get(name)
        with self._lock:
            self._conn.execute(
                "UPDATE users SET role = ?, updated_at = ? WHERE name = ?", [role, now_iso(), name]
            )
        return {**self.get(name), "previous_role": before["role"]}

    def set_password(self, name: str, password: str) -> None:
        self.get(name)
        check_password(name, password)
        digest = _hasher().hash(password)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "UPDATE users SET password_hash = ?, updated_at = ?, failures = 0, locked_until = NULL WHERE name = ?",
                [digest, now_iso(), name],
            )
            self._conn.execute("DELETE FROM refresh_tokens WHERE user = ?", [name])  # logged out everywhere
            self._conn.execute("COMMIT")

    def delete(self, name: str) -> bool:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            gone = self._conn.execute("DELETE FROM users WHERE name = ?", [name]).rowcount > 0
            self._conn.execute("DELETE FROM refresh_tokens WHERE user = ?", [name])
            self._conn.execute("COMMIT")
        return gone

    # ---- logging in --------------------------------------------------------------------------
    def check_login(
        self, name: str, password: str, now: float | None = None
    ) -> tuple[dict[str, Any], str | None]:
        """The user when `password` is right: (user, None); else raises LoginFailed. The second
        value says "locked" when this failure locked the account (the caller audits it)."""
        now = time.time() if now is None else now
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _hasher()
        with self._lock:
            row = self._conn.execute("SELECT * FROM users WHERE name = ?", [name]).fetchone()
        if row is None:
            # As long as a wrong password: the time does not tell whether the user exists.
            if self._dummy_hash is None:
                self._dummy_hash = hasher.hash(_random.token_urlsafe(16))
            with contextlib.suppress(VerificationError, InvalidHashError):
                hasher.verify(self._dummy_hash, password)
            raise LoginFailed("login failed: wrong user name or password")
        if row["locked_until"] and row["locked_until"] > now:
            until = iso_utc(datetime.fromtimestamp(row["locked_until"], UTC))
            raise LoginFailed(
                f"login failed: the account is locked until {until} after {MAX_FAILURES} failed logins"
            )
        try:
            hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError):
            return self._failed(name, now)
        with self._lock:
            self._conn.execute("UPDATE users SET failures = 0, locked_until = NULL WHERE name = ?", [name])
            if hasher.check_needs_rehash(row["password_hash"]):
                self._conn.execute(
                    "UPDATE users SET password_hash = ? WHERE name = ?", [hasher.hash(password), name]
                )
        return _public(row), None

    def _failed(self, name: str, now: float):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            row = self._conn.execute("SELECT failures FROM users WHERE name = ?", [name]).fetchone()
            failures = (row["failures"] if row else 0) + 1
            locked = failures >= MAX_FAILURES
            self._conn.execute(
                "UPDATE users SET failures = ?, locked_until = ? WHERE name = ?",
                [0 if locked else failures, now + LOCKOUT_S if locked else None, name],
            )
            self._conn.execute("COMMIT")
        error = LoginFailed("login failed: wrong user name or password")
        error.locked = locked  # type: ignore[attr-defined]
        raise error

    # ---- refresh tokens ----------------------------------------------------------------------
    def new_refresh(self, user: str, family: str | None = None, now: float | None = None) -> str:
        now = time.time() if now is None else now
        token = _random.token_urlsafe(32)
        with self._lock:
            self._conn.execute(
                "INSERT INTO refresh_tokens (token_hash, user, family, expires_at, created_at) VALUES (?, ?, ?, ?, ?)",
                [_token_hash(token), user, family or _random.token_hex(8), now + REFRESH_TTL_S, now_iso()],
            )
            self._conn.execute("DELETE FROM refresh_tokens WHERE expires_at < ?", [now])
        return token

    def spend_refresh(self, token: str, now: float | None = None) -> tuple[str, str]:
        """(user, family) of a valid refresh token, which is spent by this call; LoginFailed for
        an unknown, expired or spent one (a spent one revokes its whole family)."""
        now = time.time() if now is None else now
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT * FROM refresh_tokens WHERE token_hash = ?", [_token_hash(token)]
                ).fetchone()
                if row is None or row["expires_at"] < now:
                    self._conn.execute("COMMIT")
                    raise LoginFailed("the refresh token is not valid or has expired: log in again")
                if row["used"]:
                    self._conn.execute("DELETE FROM refresh_tokens WHERE family = ?", [row["family"]])
                    self._conn.execute("COMMIT")
                    error = LoginFailed(
                        "the refresh token was used already: every token of that login is revoked"
                    )
                    error.reused = row["user"]  # type: ignore[attr-defined]
                    raise error
                self._conn.execute(
                    "UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?", [row["token_hash"]]
                )
                self._conn.execute("COMMIT")
            except LoginFailed:
                raise
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return row["user"], row["family"]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _public(row: sqlite3.Row) -> dict[str, Any]:
    """A user as the API shows it: never the hash."""
    locked = row["locked_until"]
    return {
        "name": row["name"],
        "role": row["role"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "locked_until": iso_utc(datetime.fromtimestamp(locked, UTC))
        if locked and locked > time.time()
        else None,
    }


__all__ = ["ROLES", "UserStore", "check_password"]
