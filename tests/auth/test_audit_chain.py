"""The audit trail: append-only (SQLite triggers), hash-chained, and `verify()` finds a changed,
deleted, inserted or renumbered entry; the retention purge keeps the chain verifiable."""

from __future__ import annotations

import csv
import io
import itertools
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.auth.audit import AuditLog, entry_hash, spec_diff, to_csv
from engine.secrets import remember


@pytest.fixture
def log(tmp_path):
    audit = AuditLog(tmp_path / "metadata.db")
    for i in range(5):
        audit.record(
            "pipelines.save",
            user=f"u{i}",
            role="editor",
            source="api",
            client="10.0.0.1",
            target=f"p{i}.json",
        )
    yield audit
    audit.close()


def raw(log: AuditLog) -> sqlite3.Connection:
    conn = sqlite3.connect(log.path, isolation_level=None)
    return conn


def without_triggers(conn: sqlite3.Connection) -> None:
    """What someone with write access to the file can do: drop the guards first."""
    conn.execute("DROP TRIGGER audit_append_only_update")
    conn.execute("DROP TRIGGER audit_append_only_delete")


def test_an_untouched_chain_verifies_and_names_its_head(log):
    result = log.verify()
    newest = log.entries(limit=1)[0]
    assert result == {"ok": True, "entries": 5, "head": newest["hash"], "first_bad": None, "reason": None}
    # each entry's hash is the one computed from its predecessor's
    entries = sorted(log.entries(), key=lambda e: e["id"])
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"]
        assert after["hash"] == entry_hash(before["hash"], after)


def test_triggers_refuse_update_and_delete(log):
    conn = raw(log)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET user = 'mallory' WHERE id = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id = 2")
    assert log.verify()["ok"]


def test_a_changed_entry_is_found(log):
    conn = raw(log)
    without_triggers(conn)
    conn.execute("UPDATE audit SET outcome = 'ok', user = 'mallory' WHERE id = 3")
    result = log.verify()
    assert (result["ok"], result["first_bad"]) == (False, 3)
    assert "changed" in result["reason"]


def test_a_deleted_entry_is_found(log):
    conn = raw(log)
    without_triggers(conn)
    conn.execute("DELETE FROM audit WHERE id = 2")
    result = log.verify()
    assert (result["ok"], result["first_bad"]) == (False, 3)


def test_an_inserted_entry_is_found(log):
    conn = raw(log)
    without_triggers(conn)
    # a forged entry between 2 and 3, chained to 2 correctly: entry 3 then no longer follows
    two = dict(
        zip(("id", "hash"), conn.execute("SELECT id, hash FROM audit WHERE id = 2").fetchone(), strict=True)
    )
    conn.execute("UPDATE audit SET id = id + 100 WHERE id >= 3")
    forged = {"id": 3, "ts": "2026-01-01T00:00:00.000000Z", "user": "mallory", "role": "admin", "source": "api",
              "client": None, "action": "users.add", "target": "mallory", "outcome": "ok", "reason": None, "detail": None}  # fmt: skip
    digest = entry_hash(two["hash"], forged)
    conn.execute(
        "INSERT INTO audit (id, ts, user, role, source, client, action, target, outcome, reason, detail, prev_hash, hash)"
        " VALUES (:id, :ts, :user, :role, :source, :client, :action, :target, :outcome, :reason, :detail, :prev, :hash)",
        {**forged, "prev": two["hash"], "hash": digest},
    )
    result = log.verify()
    assert result["ok"] is False
    assert result["first_bad"] == 103  # the old third entry, renumbered, follows the forged one: broken


def test_the_purge_removes_old_entries_only_and_keeps_the_chain(tmp_path):
    audit = AuditLog(tmp_path / "metadata.db", retention_days=None)
    for i in range(4):
        audit.record("runs.start", user="u", role="editor", source="cli", target=f"p{i}")
    # the purge is the only delete the trigger allows: entries older than its cutoff
    later = datetime.now(UTC) + timedelta(days=10)
    cut_at = sorted(audit.entries(), key=lambda e: e["id"])[1]["ts"]
    moment = datetime.strptime(cut_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) + timedelta(
        microseconds=1
    )
    removed = audit.purge(0, now=moment)
    assert removed == 2
    kept = sorted(audit.entries(), key=lambda e: e["id"])
    assert [e["target"] for e in kept] == ["p2", "p3"]
    assert audit.verify() == {**audit.verify(), "ok": True, "entries": 2}
    # new entries continue the chain; ids go on
    audit.record("runs.start", user="u", role="editor", source="cli", target="p4")
    assert audit.verify()["ok"] and audit.entries(limit=1)[0]["id"] == 5
    # a purge up to everything keeps an anchor from which the next entry still verifies
    assert audit.purge(0, now=later) == 3
    assert audit.verify() == {**audit.verify(), "ok": True, "entries": 0}  # ends at the anchor
    audit.record("runs.start", user="u", role="editor", source="cli", target="p5")
    assert audit.verify() == {**audit.verify(), "ok": True, "entries": 1}
    audit.close()


def test_filters_and_csv(log):
    log.record("users.add", user="admin", role="admin", source="cli", target="ana", detail={"role": "viewer"})
    log.record(
        "users.set_role",
        user="admin",
        role="admin",
        source="cli",
        target="ana",
        outcome="denied",
        reason="no",
    )
    assert [e["action"] for e in log.entries(action="users")] == ["users.set_role", "users.add"]
    assert [e["target"] for e in log.entries(user="u1")] == ["p1.json"]
    assert [e["action"] for e in log.entries(outcome="denied")] == ["users.set_role"]
    newest = log.entries(limit=1)[0]["ts"]
    assert all(e["ts"] < newest for e in log.entries(until=newest))
    assert [e["ts"] for e in log.entries(since=newest)] == [newest]
    rows = list(csv.DictReader(io.StringIO(to_csv(log.entries()))))
    assert [int(r["id"]) for r in rows] == list(range(1, 8))
    assert rows[5]["detail"] == '{"role": "viewer"}' and rows[6]["outcome"] == "denied"


def test_secret_values_never_reach_an_entry(log):
    value = "s3cr3t-audit-value"
    remember(value)
    entry = log.record("connectors.save", user="ana", role="editor", source="api", target=f"db {value}",
                       reason=f"failed: {value}", detail={"diff": [{"path": "$.x", "new": value}]})  # fmt: skip
    stored = raw(log).execute("SELECT * FROM audit WHERE id = ?", [entry["id"]]).fetchone()
    assert value not in repr(stored)
    assert log.verify()["ok"]


@settings(max_examples=60, deadline=None)
@given(
    old=st.dictionaries(
        st.sampled_from(["name", "password", "host", "api_key"]), st.text(min_size=1, max_size=8)
    ),
    new=st.dictionaries(
        st.sampled_from(["name", "password", "host", "api_key"]), st.text(min_size=1, max_size=8)
    ),
)
def test_spec_diff_lists_each_change_and_never_a_secret_keys_value(old, new):
    changes = spec_diff({"config": old}, {"config": new})
    for key in set(old) | set(new):
        changed = old.get(key) != new.get(key)
        listed = [c for c in changes if c["path"] == f"$.config.{key}"]
        assert bool(listed) == changed
        if listed and key in ("password", "api_key"):
            assert listed[0]["old"] in (None, "***") and listed[0]["new"] in (None, "***")


def test_spec_diff_keeps_secret_references_by_name():
    old = {"nodes": [{"config": {"password": {"secret": "DB_PW"}, "host": "a"}}]}
    new = {"nodes": [{"config": {"password": {"secret": "DB_PW2"}, "host": "b"}}]}
    assert spec_diff(old, new) == [
        {"path": "$.nodes[0].config.host", "old": "a", "new": "b"},
        {"path": "$.nodes[0].config.password.secret", "old": "DB_PW", "new": "DB_PW2"},
    ]


@settings(max_examples=20, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=8),
    tamper=st.sampled_from(["change", "delete", "insert", "swap"]),
    where=st.integers(min_value=0, max_value=7),
    text=st.text(min_size=1, max_size=20),
)
def test_any_one_tampering_is_found(count, tamper, where, text):
    """Whatever single change is made to the table behind the triggers' back, verify() says so."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        log = AuditLog(Path(folder) / "metadata.db")
        for i in range(count):
            log.record("runs.start", user=f"u{i}", role="editor", source="cli", target=f"t{i}")
        assert log.verify()["ok"]
        conn = raw(log)
        without_triggers(conn)
        victim = where % count + 1
        if tamper == "change":
            old = conn.execute("SELECT target FROM audit WHERE id = ?", [victim]).fetchone()[0]
            conn.execute("UPDATE audit SET target = ? WHERE id = ?", [old + text, victim])
        elif tamper == "delete":
            conn.execute("DELETE FROM audit WHERE id = ?", [victim])
        elif tamper == "insert":  # a copy of an entry, hash and all, at the end
            conn.execute(
                "INSERT INTO audit (ts, user, role, source, client, action, target, outcome, reason, detail,"
                " prev_hash, hash) SELECT ts, user, role, source, client, action, target, outcome, reason,"
                " detail, prev_hash, hash FROM audit WHERE id = ?",
                [victim],
            )
        else:  # two entries' contents swapped
            other = victim % count + 1
            conn.execute("UPDATE audit SET id = -1 WHERE id = ?", [victim])
            conn.execute("UPDATE audit SET id = ? WHERE id = ?", [victim, other])
            conn.execute("UPDATE audit SET id = ? WHERE id = -1", [other])
        conn.close()
        result = log.verify()
        log.close()
        assert result["ok"] is False and result["first_bad"] is not None
