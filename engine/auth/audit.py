"""The audit trail: append-only, hash-chained, in the data directory's metadata.db.

Each entry: time, user, role, source (cli / gui / api / service), client address, action, target,
outcome (ok / denied / failed), reason, and a JSON `detail` (a spec edit's diff, without secret
values). `hash = sha256(prev_hash + canonical JSON of the entry, id included)`, so a changed,
deleted, inserted or renumbered row breaks the chain at that row: `verify()` finds it.

SQLite triggers refuse UPDATE and DELETE on the table. The one exception is the retention purge:
it removes entries older than the retention (default 7 years) inside one transaction that first
writes its cutoff to `audit_purge` (the delete trigger lets through only rows older than that
cutoff), moves the chain's anchor (`audit_anchor`: the hash the first kept entry follows) and
removes the cutoff again. The chain stays verifiable from the anchor. Someone who can write the
file can still drop the triggers and rebuild the whole chain: keep the head hash that
`aggregator audit --verify` prints somewhere else to detect that too.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.runs.timefmt import iso_utc, now_iso
from engine.secrets import mask

GENESIS = "0" * 64
DEFAULT_RETENTION_DAYS = 7 * 365 + 2  # seven years, leap days included
FIELDS = ("ts", "user", "role", "source", "client", "action", "target", "outcome", "reason", "detail")
OUTCOMES = ("ok", "denied", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL, user TEXT, role TEXT, source TEXT, client TEXT,
    action TEXT NOT NULL, target TEXT, outcome TEXT NOT NULL, reason TEXT, detail TEXT,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS audit_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1), hash TEXT NOT NULL, last_id INTEGER NOT NULL, purged_to TEXT
);
CREATE TABLE IF NOT EXISTS audit_purge (cutoff TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: entries cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
WHEN NOT EXISTS (SELECT 1 FROM audit_purge WHERE OLD.ts < audit_purge.cutoff)
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: only the retention purge removes entries'); END;
"""


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """sha256 over the previous hash and the entry's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(
        {"id": entry["id"], **{k: entry.get(k) for k in FIELDS}},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _text(value: Any) -> str | None:
    return None if value is None else mask(str(value))


class AuditLog:
    """The audit table of `<data dir>/metadata.db`, on a connection of its own."""

    def __init__(self, db_path: Path | str, retention_days: int | None = DEFAULT_RETENTION_DAYS):
        self.path = Path(db_path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.execute("PRAGMA journal_mode=WAL")
        with self._lock:
            self._conn.executescript(SCHEMA)
        self.retention_days = retention_days
        if retention_days:
            self.purge(retention_days)

    # ---- writing -----------------------------------------------------------------------------
    def record(
        self,
        action: str,
        *,
        user: str | None,
        role: str | None,
        source: str | None,
        client: str | None = None,
        target: Any = None,
        outcome: str = "ok",
        reason: str | None = None,
        detail: Any = None,
    ) -> dict[str, Any]:
        """Append one entry (its text masked of secret values) and return it with its hash."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: '{outcome}' (allowed: {', '.join(OUTCOMES)})")
        entry = {
            "ts": now_iso(),
            "user": _text(user),
            "role": role,
            "source": source,
            "client": client,
            "action": action,
            "target": _text(target),
            "outcome": outcome,
            "reason": _text(reason),
            "detail": None if detail is None else mask(json.dumps(detail, sort_keys=True, default=str)),
        }
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                last = self._conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
                if last is None:
                    anchor = self._conn.execute("SELECT hash FROM audit_anchor WHERE id = 1").fetchone()
                    prev = anchor["hash"] if anchor else GENESIS
                    seq = self._conn.execute(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'audit'"
                    ).fetchone()
                    next_id = (seq["seq"] if seq else 0) + 1
                else:
                    prev, next_id = last["hash"], last["id"] + 1
                entry["id"] = next_id
                entry["prev_hash"] = prev
                entry["hash"] = entry_hash(prev, entry)
                columns = ("id", *FIELDS, "prev_hash", "hash")
                self._conn.execute(
                    f"INSERT INTO audit ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                    [entry[c] for c in columns],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return entry

    def purge(self, retention_days: int, now: datetime | None = None) -> int:
        """Remove the entries older than `retention_days`, keeping the chain verifiable from its
        moved anchor; how many were removed. (The only delete the table's trigger lets through.)"""
        cutoff = iso_utc((now or datetime.now(UTC)) - timedelta(days=retention_days))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                last_old = self._conn.execute(
                    "SELECT id, hash FROM audit WHERE ts < ? ORDER BY id DESC LIMIT 1", [cutoff]
                ).fetchone()
                if last_old is None:
                    self._conn.execute("ROLLBACK")
                    return 0
                self._conn.execute("INSERT INTO audit_purge (cutoff) VALUES (?)", [cutoff])
                removed = self._conn.execute("DELETE FROM audit WHERE id <= ?", [last_old["id"]]).rowcount
                self._conn.execute(
                    "INSERT INTO audit_anchor (id, hash, last_id, purged_to) VALUES (1, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, last_id = excluded.last_id,"
                    " purged_to = excluded.purged_to",
                    [last_old["hash"], last_old["id"], cutoff],
                )
                self._conn.execute("DELETE FROM audit_purge")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return removed

    # ---- reading -----------------------------------------------------------------------------
    def entries(
        self,
        user: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        outcome: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Entries, newest first; `action` matches a prefix (`users` finds `users.add`...);
        `since`/`until` are ISO texts, [since, until)."""
        where, params = [], []
        if user:
            where.append("user = ?")
            params.append(user)
        if action:
            where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
            escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params += [action, escaped + ".%"]
        if since:
            where.append("ts >= ?")
            params.append(since)
        if until:
            where.append("ts < ?")
            params.append(until)
        if outcome:
            where.append("outcome = ?")
            params.append(outcome)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_row(r) for r in rows]

    def verify(self) -> dict[str, Any]:
        """Walk the chain from its anchor: {"ok", "entries", "head", "first_bad" (id), "reason"}."""
        with self._lock:
            anchor = self._conn.execute("SELECT hash, last_id FROM audit_anchor WHERE id = 1").fetchone()
            rows = self._conn.execute("SELECT * FROM audit ORDER BY id").fetchall()
            seq = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        prev = anchor["hash"] if anchor else GENESIS
        previous_id = anchor["last_id"] if anchor else None
        for row in rows:
            entry = dict(row)
            if previous_id is not None and entry["id"] != previous_id + 1:
                return _broken(
                    entry["id"],
                    len(rows),
                    f"entry {entry['id']} follows {previous_id}: entries are missing or inserted",
                )
            if entry["prev_hash"] != prev:
                return _broken(
                    entry["id"],
                    len(rows),
                    f"entry {entry['id']} does not follow the entry before it (one was deleted or inserted)",
                )
            if entry_hash(prev, entry) != entry["hash"]:
                return _broken(
                    entry["id"], len(rows), f"entry {entry['id']} was changed after it was written"
                )
            prev, previous_id = entry["hash"], entry["id"]
        # The newest entries deleted leave a shorter chain that is whole: SQLite's own counter of the
        # ids given out still says how far it went.
        if seq is not None and (previous_id or 0) < seq["seq"]:  # (purged ones end at the anchor)
            last = previous_id or 0
            return _broken(last + 1, len(rows), f"the entries after {last} (up to {seq['seq']}) were deleted")
        return {"ok": True, "entries": len(rows), "head": prev, "first_bad": None, "reason": None}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _broken(entry_id: int, count: int, reason: str) -> dict[str, Any]:
    return {"ok": False, "entries": count, "head": None, "first_bad": entry_id, "reason": reason}


def _row(row: sqlite3.Row) -> dict[str, Any]:
    entry = dict(row)
    if entry.get("detail"):
        with contextlib.suppress(ValueError):
            entry["detail"] = json.loads(entry["detail"])
    return entry


CSV_COLUMNS = ("id", *FIELDS, "hash")


def to_csv(entries: list[dict[str, Any]]) -> str:
    """Entries as CSV text (detail as JSON), oldest first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in sorted(entries, key=lambda e: e["id"]):
        row = [e.get(c) for c in CSV_COLUMNS]
        detail = e.get("detail")
        row[CSV_COLUMNS.index("detail")] = (
            json.dumps(detail, sort_keys=True) if isinstance(detail, dict | list) else detail
        )
        writer.writerow(row)
    return out.getvalue()


def spec_diff(old: Any, new: Any, path: str = "$") -> list[dict[str, Any]]:
    """What changed between two documents: [{path, old, new}] (JSON paths). A value under a
    secret-looking key (password, token, api_key...) is shown as '***' (its change is still
    listed), a secret reference `{"secret": NAME}` by its name, and resolved secret values are
    masked. At most 200 changes are listed."""
    changes: list[dict[str, Any]] = []
    _diff(old, new, path, changes, "")
    return changes[:200]


_SECRET_KEYS = ("password", "passwd", "secret", "token", "api_key", "apikey", "private_key", "credential")


def _secret_key(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_KEYS)


def _hide(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        if set(value) == {"secret"}:
            return {"secret": value["secret"]}  # a reference names the secret, never its value
        return {k: _hide(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide(v, key) for v in value]
    if value is _MISSING or value is None:
        return None
    if _secret_key(key):
        return "***"
    return mask(value) if isinstance(value, str) else value


def _is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secret"}


def _diff(old: Any, new: Any, path: str, out: list[dict[str, Any]], key: str) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        reference = _is_reference(old) or _is_reference(new)
        for k in sorted(set(old) | set(new), key=str):
            inner = "" if reference and k == "secret" else str(k)
            _diff(old.get(k, _MISSING), new.get(k, _MISSING), f"{path}.{k}", out, inner)
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _diff(a, b, f"{path}[{i}]", out, key)
        return
    if old != new:
        out.append({"path": path, "old": _hide(old, key), "new": _hide(new, key)})


class _Missing:
    def __eq__(self, other: object) -> bool:
        return other is self

    __hash__ = object.__hash__


_MISSING = _Missing()
