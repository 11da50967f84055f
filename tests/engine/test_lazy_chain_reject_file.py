"""The one-query chain's reject file (engine/lazy_chain.py `_open_reject_store`, engine/store/historian.py
`RejectFile`): where the historian is not open, the rejects of a run are written as one Parquet file
that the readers fold into `_rejects`. Its rows must be those the push executor stores in the table
for the same input (both through `_reject_table`), for every kind of column (time zones, dates,
lists, nulls, several validations), with the same per-node counts; a run without rejects leaves no
file, and a run cancelled while the query runs stops the query itself and leaves neither the file
nor its temporary. Real files, real DuckDB (the read folds the file into the table).

Written while measuring the reject file sunk by the query itself (issue 12, docs/performance.md task
P): any such change must keep these."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import polars as pl
import pytest

import engine.lazy_chain as lazy_chain
from engine.errors import RunCancelled
from engine.executor import Executor
from engine.lazy_chain import LazyChainExecutor, chain_of
from engine.runs.record import run_context
from engine.spec.validate import validate
from engine.store.historian import _reject_table
from engine.workspace import Workspace

VALIDATIONS = [
    {"type": "field_validation", "field_name": "email", "validation_type": "email_format"},
    {"type": "field_mapping", "field_name": "name", "operation": "uppercase"},
    {"type": "field_validation", "field_name": "name", "validation_type": "not_null"},
]


@pytest.fixture(autouse=True)
def any_size(monkeypatch):
    monkeypatch.setattr(lazy_chain, "LAZY_MIN_BYTES", 0)


def _source(folder) -> pl.DataFrame:
    n = 40
    frame = pl.DataFrame(
        {
            "id": list(range(n)),
            "name": [None if i % 7 == 0 else f"n{i}" for i in range(n)],
            "email": [
                "bad" if i % 3 == 0 else (None if i % 5 == 0 else f"u{i}@example.com") for i in range(n)
            ],
            "at": [datetime(2026, 1, 1 + i % 28, 12, i, 7, 1234, tzinfo=UTC) for i in range(n)],
            "local": [datetime(2026, 3, 2, 1, 2, 3) for _ in range(n)],
            "day": [date(2025, 12, 1 + i % 30) for i in range(n)],
            "tags": [["a", "b"] if i % 2 else [] for i in range(n)],
            "price": [None if i % 4 == 0 else i * 1.5 for i in range(n)],
            "ok": [i % 2 == 0 for i in range(n)],
        }
    )
    frame.write_parquet(folder / "in.parquet")
    return frame


def _doc(folder) -> dict:
    return {
        "name": "typed rejects",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": str(folder / "in.parquet")}}],
        "transformations": VALIDATIONS,
        "destinations": [
            {"name": "out", "connector_type": "file", "config": {"path": str(folder / "out.parquet")}}
        ],
    }


def _stored(ws: Workspace, run_id: str) -> list[tuple]:
    rows = ws.historian.rejects(run_id).select("run_id", "pipeline", "node_id", "reason", "record")
    return sorted(rows.rows())


def test_the_querys_reject_file_holds_what_the_push_executor_stores(tmp_path):
    folders = {kind: tmp_path / kind for kind in ("lazy", "push")}
    for folder in folders.values():
        folder.mkdir()
        _source(folder)
    stored = {}
    for kind, folder in folders.items():
        with Workspace(folder / "data") as ws:
            plan = validate(_doc(folder))
            ctx = run_context(plan, ws, "run-1", datetime.now(UTC), folder, threading.Event(), False)
            if kind == "lazy":
                assert not ws.historian.is_open
                executor: Executor = LazyChainExecutor(plan, ctx, chain_of(plan))
            else:
                executor = Executor(plan, ctx)
            result = executor.execute()
            if kind == "lazy":
                assert executor.took_lazy_path  # type: ignore[attr-defined]
                assert not ws.historian.is_open  # the rejects did not need DuckDB
                [file] = list(ws.historian.reject_folder.iterdir())  # no hidden file left beside it
                assert file.name == "run-1.parquet"
                written = pl.read_parquet(file)
                expected = _reject_table(
                    [("x", pl.DataFrame({"a": [1], "_reject_reason": ["r"]}))], run_id="r", pipeline="p"
                )
                assert written.schema == expected.schema  # the file the readers fold, column for column
                assert written.height == result.rows_rejected
            stored[kind] = (_stored(ws, "run-1"), result.rows_rejected, dict(executor._port_rows))
    (lazy_rows, lazy_count, lazy_ports), (push_rows, push_count, push_ports) = stored["lazy"], stored["push"]
    assert lazy_count == push_count == len(push_rows) > 0
    assert {node for _r, _p, node, _reason, _rec in push_rows} == {"field_validation_1", "field_validation_3"}
    assert lazy_rows == push_rows
    assert lazy_ports == push_ports  # the per-node counts came through the query's callbacks


def test_a_run_without_rejects_leaves_no_reject_file(tmp_path):
    _source(tmp_path)
    doc = _doc(tmp_path)
    doc["transformations"] = [{"type": "field_validation", "field_name": "id", "validation_type": "not_null"}]
    with Workspace(tmp_path / "data") as ws:
        plan = validate(doc)
        ctx = run_context(plan, ws, "run-2", datetime.now(UTC), tmp_path, threading.Event(), False)
        executor = LazyChainExecutor(plan, ctx, chain_of(plan))
        result = executor.execute()
        assert executor.took_lazy_path and result.rows_rejected == 0
        assert list(ws.historian.reject_folder.glob("*")) == []
        assert (tmp_path / "out.parquet").exists()


def test_a_cancelled_run_leaves_no_reject_file(tmp_path, query_errors):
    _source(tmp_path)
    with Workspace(tmp_path / "data") as ws:
        plan = validate(_doc(tmp_path))
        ctx = run_context(plan, ws, "run-3", datetime.now(UTC), tmp_path, threading.Event(), False)
        seen = []
        real = ctx.cancel.is_set

        def cancelled_at_the_first_rejects() -> bool:  # cancelled while the query runs
            seen.append(1)
            return len(seen) > 1 or real()

        executor = LazyChainExecutor(plan, ctx, chain_of(plan))
        ctx.cancel.is_set = cancelled_at_the_first_rejects  # type: ignore[method-assign]
        with pytest.raises(RunCancelled):
            executor.execute()
        assert query_errors, "the query ran to its end: nothing in it looked at the cancellation"
        assert list(ws.historian.reject_folder.glob("*")) == []  # neither the file nor its temporary
        assert not (tmp_path / "out.parquet").exists()
        assert [p.name for p in tmp_path.glob(".out.parquet*")] == []
        assert ws.historian.rejects("run-3").height == 0
