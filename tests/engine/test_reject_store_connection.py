"""The reject store's connection (issue 12): a historian opened only for a run's rejects gets one
DuckDB thread and none of the stream's settings; the first ordinary cursor gives them back. The
rejects keep what they keep (run id, pipeline, node, reason, the record) and are readable after."""

from __future__ import annotations

import json
import os

import duckdb
import polars as pl

from engine.store.historian import THREADS_ENV, Historian, RejectWriter


def settings(cur: duckdb.DuckDBPyConnection) -> tuple[int, bool]:
    return cur.execute(
        "SELECT current_setting('threads'), current_setting('preserve_insertion_order')"
    ).fetchone()


def duckdb_default_threads(tmp_path) -> int:
    con = duckdb.connect(str(tmp_path / "default.duckdb"))
    try:
        return con.execute("SELECT current_setting('threads')").fetchone()[0]
    finally:
        con.close()


def rejects() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "order_id": [1, 2],
            "customer_email": ["user1@", None],
            "price": [12.5, 3.0],
            "_reject_reason": ["customer_email: not an email", "customer_email: missing"],
        }
    )


def test_a_connection_opened_for_the_rejects_has_one_thread_and_no_stream_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    historian = Historian(tmp_path / "historian.duckdb")
    writer = RejectWriter(historian, run_id="run-1", pipeline="orders")
    try:
        writer.open()
        assert settings(writer.cur) == (1, True)
        writer.write(("check_email", rejects()))
        writer.close()
        # An ordinary cursor after it (a DuckDB destination, the tag historian) gets them back.
        cur = historian.cursor()
        assert settings(cur) == (duckdb_default_threads(tmp_path), False)
        cur.close()
    finally:
        historian.close()


def test_a_background_cursor_of_such_a_connection_gets_the_stream_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    historian = Historian(tmp_path / "historian.duckdb")
    try:
        historian.cursor(small_writes=True).close()
        cur = historian.cursor_if_open()
        assert cur is not None and settings(cur) == (duckdb_default_threads(tmp_path), False)
        cur.close()
    finally:
        historian.close()


def test_an_open_connection_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    historian = Historian(tmp_path / "historian.duckdb")
    try:
        historian.cursor().close()
        cur = historian.cursor(small_writes=True)
        assert settings(cur) == (duckdb_default_threads(tmp_path), False)
        cur.close()
    finally:
        historian.close()


def test_the_environment_s_threads_win_for_the_rejects_too(tmp_path, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    historian = Historian(tmp_path / "historian.duckdb")
    try:
        cur = historian.cursor(small_writes=True)
        assert settings(cur)[0] == 2
        cur.close()
        cur = historian.cursor()
        assert settings(cur) == (2, False)
        cur.close()
    finally:
        historian.close()


def test_the_rejects_keep_everything_and_another_process_reads_them(tmp_path, monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    path = tmp_path / "historian.duckdb"
    historian = Historian(path)
    writer = RejectWriter(historian, run_id="run-1", pipeline="orders")
    writer.open()
    writer.write(("check_email", rejects()))
    writer.close()
    historian.close()
    assert not os.path.exists(str(path) + ".wal")  # closed with its checkpoint: nothing to replay
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(
            "SELECT run_id, pipeline, node_id, reason, record::VARCHAR FROM _rejects ORDER BY reason DESC"
        ).fetchall()
    finally:
        con.close()
    assert [r[:4] for r in rows] == [
        ("run-1", "orders", "check_email", "customer_email: not an email"),
        ("run-1", "orders", "check_email", "customer_email: missing"),
    ]
    assert [json.loads(r[4]) for r in rows] == [
        {"order_id": 1, "customer_email": "user1@", "price": 12.5},
        {"order_id": 2, "customer_email": None, "price": 3.0},
    ]
