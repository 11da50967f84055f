"""The alerts' durable record: one SQLite table `alerts` in the data directory's metadata.db (its
own connection, WAL, synchronous=FULL; the metadata store's tables are not touched).

Lifecycle of one alert: raised (state `active`) -> acknowledged (by whom, when, a note; state
`acknowledged`, still open) -> cleared (the condition is no longer true; state `cleared`, closed).
At most one open alert per rule and subject (a unique partial index): raising an open alert again
only refreshes its value and message. A rule is `<pipeline>#<index>:<condition text>`; the subject
is what the condition is about (the pipeline, a source node, a tag, an outbox destination).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import DataError
from engine.store.sqlite_tx import immediate

SEVERITIES = ("info", "warning", "critical")

_DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    condition TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT,
    value REAL,
    notify TEXT,
    raised_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    ack_note TEXT,
    cleared_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts(rule, subject) WHERE state != 'cleared';
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state, id);
CREATE TABLE IF NOT EXISTS alert_channels (
    destination TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    config TEXT NOT NULL
);
"""

COLUMNS = (
    "id",
    "rule",
    "pipeline",
    "subject",
    "kind",
    "condition",
    "severity",
    "state",
    "message",
    "value",
    "notify",
    "raised_at",
    "updated_at",
    "acknowledged_at",
    "acknowledged_by",
    "ack_note",
    "cleared_at",
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AlertStore:
    """Thread-safe; several processes may open the same file (SQLite's locking)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.con.row_factory = sqlite3.Row
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute("PRAGMA busy_timeout=30000")
        self.con.executescript(_DDL)

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self.con.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self.con, self._lock)

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        return dict(row) if row is not None else None

    # ---- lifecycle ---------------------------------------------------------------------------
    def raise_alert(
        self,
        *,
        rule: str,
        pipeline: str,
        subject: str,
        kind: str,
        condition: str,
        severity: str,
        message: str,
        value: float | None = None,
        notify: str = "",
    ) -> tuple[dict[str, Any], bool]:
        """The open alert of (rule, subject): made if there is none (returns (alert, True)), else
        refreshed (value, message; (alert, False))."""
        now = _now()
        with self._tx() as con:
            row = con.execute(
                "SELECT * FROM alerts WHERE rule=? AND subject=? AND state != 'cleared'", (rule, subject)
            ).fetchone()
            if row is not None:
                con.execute(
                    "UPDATE alerts SET value=?, message=?, updated_at=? WHERE id=?",
                    (value, message, now, row["id"]),
                )
                new = False
                alert_id = row["id"]
            else:
                cur = con.execute(
                    "INSERT INTO alerts (rule, pipeline, subject, kind, condition, severity, state, message,"
                    " value, notify, raised_at, updated_at) VALUES (?,?,?,?,?,?,'active',?,?,?,?,?)",
                    (rule, pipeline, subject, kind, condition, severity, message, value, notify, now, now),
                )
                new = True
                alert_id = cur.lastrowid
            alert = self._row(con.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone())
        assert alert is not None
        return alert, new

    def apply(
        self, raises: list[dict[str, Any]], clears: list[tuple[str, str, str | None]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Many raises (the keyword arguments of `raise_alert`) and clears (rule, subject, message)
        in ONE transaction (one fsync: a batch's thresholds, not one commit per tag). Returns
        (the alerts newly raised, the alerts cleared)."""
        if not raises and not clears:
            return [], []
        now = _now()
        new_ids: list[int] = []
        cleared_ids: list[int] = []
        with self._tx() as con:
            for rule, subject, message in clears:
                row = con.execute(
                    "SELECT id FROM alerts WHERE rule=? AND subject=? AND state != 'cleared'", (rule, subject)
                ).fetchone()
                if row is not None:
                    con.execute(
                        "UPDATE alerts SET state='cleared', cleared_at=?, updated_at=?,"
                        " message=COALESCE(?, message) WHERE id=?",
                        (now, now, message, row["id"]),
                    )
                    cleared_ids.append(row["id"])
            for r in raises:
                row = con.execute(
                    "SELECT id FROM alerts WHERE rule=? AND subject=? AND state != 'cleared'",
                    (r["rule"], r["subject"]),
                ).fetchone()
                if row is not None:
                    con.execute(
                        "UPDATE alerts SET value=?, message=?, updated_at=? WHERE id=?",
                        (r.get("value"), r["message"], now, row["id"]),
                    )
                    continue
                cur = con.execute(
                    "INSERT INTO alerts (rule, pipeline, subject, kind, condition, severity, state, message,"
                    " value, notify, raised_at, updated_at) VALUES (?,?,?,?,?,?,'active',?,?,?,?,?)",
                    (
                        r["rule"], r["pipeline"], r["subject"], r["kind"], r["condition"], r["severity"],
                        r["message"], r.get("value"), r.get("notify", ""), now, now,
                    ),
                )  # fmt: skip
                new_ids.append(int(cur.lastrowid))

            def rows(ids: list[int]) -> list[dict[str, Any]]:
                return [dict(con.execute("SELECT * FROM alerts WHERE id=?", (i,)).fetchone()) for i in ids]

            return rows(new_ids), rows(cleared_ids)

    def clear(self, rule: str, subject: str, message: str | None = None) -> dict[str, Any] | None:
        """Close the open alert of (rule, subject), if any; returns it (cleared)."""
        now = _now()
        with self._tx() as con:
            row = con.execute(
                "SELECT id FROM alerts WHERE rule=? AND subject=? AND state != 'cleared'", (rule, subject)
            ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE alerts SET state='cleared', cleared_at=?, updated_at=?, message=COALESCE(?, message)"
                " WHERE id=?",
                (now, now, message, row["id"]),
            )
            return self._row(con.execute("SELECT * FROM alerts WHERE id=?", (row["id"],)).fetchone())

    def acknowledge(self, alert_id: int, by: str, note: str | None = None) -> dict[str, Any]:
        """Mark an open alert acknowledged (it stays open until its condition clears). Acknowledging
        it again updates who and the note; a cleared alert cannot be acknowledged (DataError)."""
        now = _now()
        with self._tx() as con:
            row = con.execute("SELECT state FROM alerts WHERE id=?", (int(alert_id),)).fetchone()
            if row is None:
                raise DataError(f"no alert with id {alert_id}")
            if row["state"] == "cleared":
                raise DataError(
                    f"alert {alert_id} is cleared already: only an open alert can be acknowledged"
                )
            con.execute(
                "UPDATE alerts SET state='acknowledged', acknowledged_at=?, acknowledged_by=?, ack_note=?,"
                " updated_at=? WHERE id=?",
                (now, by, note, now, int(alert_id)),
            )
            alert = self._row(con.execute("SELECT * FROM alerts WHERE id=?", (int(alert_id),)).fetchone())
        assert alert is not None
        return alert

    # ---- reading -----------------------------------------------------------------------------
    def get(self, alert_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._row(self.con.execute("SELECT * FROM alerts WHERE id=?", (int(alert_id),)).fetchone())

    def list(
        self,
        *,
        active: bool = True,
        severity: str | None = None,
        pipeline: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Newest first; `active`: open alerts only (active or acknowledged)."""
        where, params = [], []
        if active:
            where.append("state != 'cleared'")
        if severity:
            where.append("severity = ?")
            params.append(severity)
        if pipeline:
            where.append("pipeline = ?")
            params.append(pipeline)
        sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            return [dict(r) for r in self.con.execute(sql, (*params, int(limit))).fetchall()]

    def open_keys(self) -> set[tuple[str, str]]:
        with self._lock:
            return {
                (r["rule"], r["subject"])
                for r in self.con.execute("SELECT rule, subject FROM alerts WHERE state != 'cleared'")
            }

    def counts(self) -> dict[str, int]:
        """Open alerts by severity (every severity present, 0 when none)."""
        out = dict.fromkeys(SEVERITIES, 0)
        with self._lock:
            for r in self.con.execute(
                "SELECT severity, COUNT(*) AS n FROM alerts WHERE state != 'cleared' GROUP BY severity"
            ):
                out[r["severity"]] = int(r["n"])
        return out

    # ---- notification channels (to rebuild a target after a restart) ------------------------
    def save_channel(self, destination: str, channel: str, config: str) -> None:
        with self._tx() as con:
            con.execute(
                "INSERT INTO alert_channels VALUES (?,?,?) ON CONFLICT(destination) DO UPDATE SET"
                " channel=excluded.channel, config=excluded.config",
                (destination, channel, config),
            )

    def channels(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            return {
                r["destination"]: (r["channel"], r["config"])
                for r in self.con.execute("SELECT * FROM alert_channels")
            }
