"""The one-query chain (engine/lazy_chain.py) against the push executor, on random small data.

Every transformation type the lazy path takes (`LAZY_TYPES`) is drawn into random chains over random
orders; the push executor reads the same file in batches of a few rows (so its per-batch pass is
really per batch), the lazy executor in one query. Their counts per node, kept rows (Parquet, CSV and
a DuckDB table) and rejects with reasons must be identical.
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import engine.connectors.file as file_connector
import engine.lazy_chain as lazy_chain
from engine.errors import RunCancelled, SpecError
from engine.executor import Executor
from engine.lazy_chain import LAZY_TYPES, LazyChainExecutor, chain_of, executor_for
from engine.runner import run_pipeline
from engine.runs.record import run_context
from engine.spec.validate import validate
from engine.workspace import Workspace

STEPS: list[dict] = [
    {"type": "field_mapping", "field_name": "name", "operation": "title_case"},
    {"type": "field_mapping", "field_name": "status", "operation": "uppercase"},
    {"type": "field_mapping", "field_name": "email", "operation": "trim"},
    {
        "type": "field_calculation",
        "field_name": "total",
        "operation": "multiply",
        "parameters": {"source_fields": ["price", "qty"], "output_field": "total"},
    },
    {
        "type": "field_calculation",
        "field_name": "ratio",
        "operation": "divide",
        "parameters": {"source_fields": ["price", "qty"], "output_field": "ratio"},
    },
    {
        "type": "record_filter",
        "condition": {"field": "status", "operator": "not_equals", "value": "cancelled"},
    },
    {"type": "record_filter", "condition": {"field": "price", "operator": "gt", "value": 20}},
    {
        "type": "record_filter",
        "condition": {
            "any": [{"field": "qty", "operator": "lte", "value": 3}, {"field": "name", "operator": "is_null"}]
        },
    },
    {"type": "field_addition", "field_name": "processed_at", "value": "current_timestamp"},
    {"type": "field_addition", "field_name": "tag", "value": "batch-7"},
    {
        "type": "field_addition",
        "field_name": "label",
        "operation": "concat",
        "parameters": {"source_fields": ["name", "status"], "separator": "/"},
    },
    {"type": "field_removal", "field_names": ["note1"]},
    {"type": "schema_mapping", "mapping": {"note2": "remark"}},
    {"type": "field_validation", "field_name": "email", "validation_type": "email_format"},
    {
        "type": "field_validation",
        "field_name": "price",
        "validation_type": "range",
        "parameters": {"min": 1, "max": 80},
    },
    {"type": "field_validation", "field_name": "name", "validation_type": "not_null"},
    {
        "type": "field_validation",
        "field_name": "status",
        "validation_type": "in_set",
        "parameters": {"values": ["completed", "pending", "cancelled"]},
    },
    {
        "type": "field_validation",
        "field_name": "email",
        "validation_type": "regex",
        "parameters": {"regex": "@ex"},
    },
    {"type": "field_validation", "field_name": "qty", "validation_type": "not_null", "on_failure": "flag"},
    {"type": "hashing", "field_names": ["name"], "algorithm": "sha256"},
]

rows = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.none() | st.sampled_from(["ann lee", "BOB  ray", "li wei", "é ß"]),
            "email": st.none()
            | st.sampled_from(["a@example.com", " b@ex.org ", "bad", "c@", "d@example.co.uk"]),
            "price": st.none() | st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 2)),
            "qty": st.none() | st.integers(0, 9),
            "status": st.none() | st.sampled_from(["completed", "pending", "cancelled", "Cancelled"]),
            "note1": st.sampled_from(["x", "y"]),
            "note2": st.sampled_from(["p", "q"]),
        }
    ),
    min_size=1,
    max_size=25,
)
chains = st.lists(
    st.sampled_from(STEPS), min_size=1, max_size=6, unique_by=lambda s: json.dumps(s, sort_keys=True)
)
_ids = itertools.count()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    with Workspace(tmp_path_factory.mktemp("lazy")) as workspace:
        yield workspace


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    """The push executor reads 3 rows a batch; the lazy one takes files of any size."""
    monkeypatch.setattr(file_connector, "SMALL_FILE_BATCH_ROWS", 3)
    monkeypatch.setattr(lazy_chain, "LAZY_MIN_BYTES", 0)


def test_every_lazy_type_is_drawn():
    assert {step["type"] for step in STEPS} == LAZY_TYPES


def _doc(src: Path, steps: list[dict], destination: dict) -> dict:
    return {
        "name": "lazy chain",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": str(src)}}],
        "transformations": steps,
        "destinations": [{"name": "out", **destination}],
    }


def _destination(kind: str, folder: Path, tag: str) -> dict:
    if kind == "duckdb":
        return {"connector_type": "duckdb", "config": {"table": f"out_{tag}", "mode": "replace"}}
    return {"connector_type": "file", "config": {"path": str(folder / f"out_{tag}.{kind}")}}


def _run(ws: Workspace, doc: dict, run_id: str, started: datetime, lazy: bool):
    try:
        plan = validate(doc)
    except SpecError:  # e.g. a step on a column the draw left all empty (read as text)
        assume(False)
        raise
    ctx = run_context(plan, ws, run_id, started, ws.data_dir, threading.Event(), dry_run=False)
    if lazy:
        chain = chain_of(plan)
        assert chain is not None
        executor: Executor = LazyChainExecutor(plan, ctx, chain)
    else:
        executor = Executor(plan, ctx)
    result = executor.execute()
    if lazy:
        assert executor.took_lazy_path  # type: ignore[attr-defined]
    return result


def _kept(ws: Workspace, kind: str, doc: dict) -> pl.DataFrame:
    config = doc["destinations"][0]["config"]
    if kind == "duckdb":
        with ws.historian.cursor() as cur:
            found = cur.execute(f"SELECT * FROM {config['table']}")
            names = [d[0] for d in found.description]
            table = pl.DataFrame(found.fetchall(), schema=names, orient="row", infer_schema_length=None)
        return table.sort(names, nulls_last=True)  # a table's rows have no order
    if kind == "parquet":
        return pl.read_parquet(config["path"])
    return pl.read_csv(config["path"], infer_schema=False)


def _rejects(ws: Workspace, run_id: str) -> list[tuple]:
    with ws.historian.cursor() as cur:
        exists = cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '_rejects'"
        ).fetchone()
        if not exists or not exists[0]:
            return []
        return cur.execute(
            "SELECT node_id, reason, record FROM _rejects WHERE run_id = ? ORDER BY ALL", [run_id]
        ).fetchall()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=rows, steps=chains, kind=st.sampled_from(["parquet", "csv", "duckdb"]))
def test_the_one_query_chain_means_what_the_push_executor_does(ws, data, steps, kind):
    n = next(_ids)
    folder = ws.data_dir
    src = folder / f"in_{n}.csv"
    pl.DataFrame(data, schema={k: None for k in data[0]}).write_csv(src)
    started = datetime.now(UTC)
    docs = {lazy: _doc(src, steps, _destination(kind, folder, f"{n}_{int(lazy)}")) for lazy in (False, True)}
    results = {lazy: _run(ws, docs[lazy], f"run-{n}-{int(lazy)}", started, lazy) for lazy in (False, True)}
    push, lazy = results[False], results[True]
    assert (lazy.rows_in, lazy.rows_out, lazy.rows_rejected) == (
        push.rows_in,
        push.rows_out,
        push.rows_rejected,
    )
    assert {k: (s.rows_in, s.rows_out, s.rows_rejected, s.status) for k, s in lazy.stats.items()} == {
        k: (s.rows_in, s.rows_out, s.rows_rejected, s.status) for k, s in push.stats.items()
    }
    kept_push, kept_lazy = _kept(ws, kind, docs[False]), _kept(ws, kind, docs[True])
    assert kept_lazy.equals(kept_push), (kept_push, kept_lazy)
    assert kept_push.height == push.rows_out
    assert _rejects(ws, f"run-{n}-1") == _rejects(ws, f"run-{n}-0")
    assert len(_rejects(ws, f"run-{n}-0")) == push.rows_rejected


def test_a_run_record_from_the_lazy_path(ws, tmp_path):
    src = ws.data_dir / "record.csv"
    pl.DataFrame({"email": ["a@example.com", "bad", None, "x@y"], "qty": [1, 2, 3, 4]}).write_csv(src)
    doc = _doc(
        src, [STEPS[13]], {"connector_type": "file", "config": {"path": str(ws.data_dir / "rec.parquet")}}
    )
    record = run_pipeline(validate(doc), ws, base_dir=ws.data_dir)
    assert (record["status"], record["rows_in"], record["rows_out"], record["rows_rejected"]) == (
        "warning",
        4,
        2,
        2,
    )
    assert pl.read_parquet(ws.data_dir / "rec.parquet")["email"].to_list() == ["a@example.com", None]


@pytest.mark.parametrize(
    "doc_change",
    [
        lambda d: d["transformations"].append({"type": "sort", "fields": ["qty"]}),
        lambda d: d["transformations"].append(
            {"type": "field_validation", "field_name": "email", "validation_type": "unique"}
        ),
        lambda d: d["transformations"].append(
            {
                "type": "field_validation",
                "field_name": "email",
                "validation_type": "email_format",
                "on_failure": "fail",
            }
        ),
    ],
    ids=["blocking", "unique", "fail"],
)
def test_other_graphs_take_the_push_executor(ws, doc_change):
    doc = _doc(ws.data_dir / "any.csv", [STEPS[0]], {"connector_type": "file", "config": {"path": "o.csv"}})
    assert chain_of(validate(doc)) is not None
    doc_change(doc)
    plan = validate(doc)
    assert chain_of(plan) is None
    assert (
        type(
            executor_for(plan, run_context(plan, ws, "r", datetime.now(UTC), None, threading.Event(), False))
        )
        is Executor
    )


def test_a_failing_query_falls_back_to_the_push_executors_error(ws):
    src = ws.data_dir / "broken.csv"
    lines = [f"{i},ann,{i}" for i in range(300)] + ["300,bob,x"]  # `qty` is inferred as int, then 'x'
    src.write_text("id,name,qty\n" + "\n".join(lines) + "\n")
    doc = _doc(
        src, [STEPS[0]], {"connector_type": "file", "config": {"path": str(ws.data_dir / "b.parquet")}}
    )
    record = run_pipeline(validate(doc), ws, base_dir=ws.data_dir)
    assert record["status"] == "failed"
    assert "broken.csv" in record["error"] and "line 302" in record["error"], record["error"]
    assert not (ws.data_dir / "b.parquet").exists()


@pytest.mark.parametrize("kind", ["parquet", "duckdb"])
def test_a_cancelled_one_query_run_leaves_nothing(ws, kind):
    src = ws.data_dir / f"cancel_{kind}.csv"
    pl.DataFrame({"email": ["a@example.com", "bad"] * 50, "qty": list(range(100))}).write_csv(src)
    doc = _doc(src, [STEPS[13]], _destination(kind, ws.data_dir, f"cancel_{kind}"))
    plan = validate(doc)
    ctx = run_context(plan, ws, f"cancel-{kind}", datetime.now(UTC), ws.data_dir, threading.Event(), False)
    ctx.cancel.set()
    with pytest.raises(RunCancelled):
        LazyChainExecutor(plan, ctx, chain_of(plan)).execute()
    assert not (ws.data_dir / f"out_cancel_{kind}.parquet").exists()
    assert [p.name for p in ws.data_dir.glob(f".out_cancel_{kind}*")] == []
    assert _rejects(ws, f"cancel-{kind}") == []
    with ws.historian.cursor() as cur:
        tables = {r[0] for r in cur.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert f"out_cancel_{kind}" not in tables


def test_a_run_cancelled_mid_query_stops_the_query_with_no_python_output(ws, query_errors):
    """A chain whose every output is a Polars sink (Parquet, no validation: no callback into
    Python) still stops where it is when cancelled: the source's batches pass a look at the
    cancellation (`_Looker`). The run is cancelled after the first batch; the query must
    raise (not run to its end), and nothing is left."""
    src = ws.data_dir / "cancel_mid.csv"
    pl.DataFrame({"name": ["ann", "bob"] * 100_000, "qty": list(range(200_000))}).write_csv(src)
    doc = _doc(src, [STEPS[0]], _destination("parquet", ws.data_dir, "cancel_mid"))
    plan = validate(doc)
    ctx = run_context(plan, ws, "cancel-mid", datetime.now(UTC), ws.data_dir, threading.Event(), False)
    looks = []

    def cancelled_after_the_first_batch() -> bool:
        looks.append(1)
        return len(looks) > 1

    ctx.cancel.is_set = cancelled_after_the_first_batch  # type: ignore[method-assign]
    executor = LazyChainExecutor(plan, ctx, chain_of(plan))
    with pytest.raises(RunCancelled):
        executor.execute()
    assert query_errors, "the query ran to its end: nothing in it looked at the cancellation"
    assert not executor.took_lazy_path
    assert not (ws.data_dir / "out_cancel_mid.parquet").exists()
    assert [p.name for p in ws.data_dir.glob(".out_cancel_mid*")] == []


@pytest.mark.parametrize(
    "steps",
    [
        [13],  # one validation
        [13, 14],  # two: the first one's rejects lie inside the second's shared subplan
        [13, 0, 15, 16],
        [5, 13],  # a filter before a validation: the kept rows are counted from the file
        [5, 6, 13, 14],  # two filters (the first counted in the query) and two validations
    ],
)
@pytest.mark.parametrize("kind", ["parquet", "csv", "duckdb"])
def test_the_query_reads_its_source_once(ws, monkeypatch, steps, kind):
    """Every output of the one query (kept rows, each validation's rejects, the counts) comes from
    one read of the source: Polars shares a subplan between outputs only where it can see it, and
    an output that re-reads the source re-parses and re-transforms all of it. Read off the plan
    Polars runs (`explain_all`): one scan. Before, a CSV destination (its kept rows counted in the
    query) and a second validation each added a scan; the counts must stay right all the same."""
    src = ws.data_dir / f"once_{kind}_{len(steps)}_{steps[0]}.csv"
    n = 60
    pl.DataFrame(
        {
            "name": [None if i % 9 == 0 else f"n{i}" for i in range(n)],
            "email": ["bad" if i % 4 == 0 else f"u{i}@example.com" for i in range(n)],
            "price": [float(i) for i in range(n)],
            "qty": list(range(n)),
            "status": [["completed", "pending", "cancelled", "odd"][i % 4] for i in range(n)],
            "note1": ["x"] * n,
            "note2": ["p"] * n,
        }
    ).write_csv(src)
    plans: list[str] = []
    collect_all = pl.collect_all

    def explained(queries, *args, **kwargs):
        queries = list(queries)
        plans.append(pl.explain_all(queries))
        return collect_all(queries, *args, **kwargs)

    monkeypatch.setattr(pl, "collect_all", explained)
    tag = f"once_{kind}_{'_'.join(map(str, steps))}"
    doc = _doc(src, [STEPS[i] for i in steps], _destination(kind, ws.data_dir, tag))
    lazy = _run(ws, doc, f"{tag}-lazy", datetime.now(UTC), lazy=True)
    [plan] = plans
    assert plan.count("SCAN [") == 1, plan
    monkeypatch.setattr(pl, "collect_all", collect_all)
    push = _run(
        ws,
        doc | {"destinations": [{"name": "out", **_destination(kind, ws.data_dir, tag + "p")}]},
        f"{tag}-push",
        datetime.now(UTC),
        lazy=False,
    )
    assert (lazy.rows_in, lazy.rows_out, lazy.rows_rejected) == (
        push.rows_in,
        push.rows_out,
        push.rows_rejected,
    )
    assert lazy.rows_rejected > 0


def test_a_plan_that_would_read_twice_counts_the_source_on_its_own(ws, monkeypatch):
    """The source's rows are counted as its batches enter the query (`_Looker`), which is right
    only when the plan reads the source once; `_reads_once` checks the plan first, and where it
    says no (here forced), the file is counted on its own, and the counts are still the push
    executor's."""
    src = ws.data_dir / "guard.csv"
    pl.DataFrame(
        {"email": ["a@example.com", "bad", None] * 40, "status": ["ok", "cancelled", "ok", "x"] * 30}
    ).write_csv(src)
    steps = [
        {"type": "field_validation", "field_name": "email", "validation_type": "email_format"},
        STEPS[5],
    ]
    seen = []
    monkeypatch.setattr(lazy_chain, "_reads_once", lambda queries: seen.append(len(queries)) or False)
    doc = _doc(src, steps, _destination("parquet", ws.data_dir, "guard"))
    lazy = _run(ws, doc, "guard-lazy", datetime.now(UTC), lazy=True)
    assert seen, "the plan was not checked"
    push = _run(ws, doc, "guard-push", datetime.now(UTC), lazy=False)
    assert (lazy.rows_in, lazy.rows_out, lazy.rows_rejected) == (
        push.rows_in,
        push.rows_out,
        push.rows_rejected,
    )
    assert lazy.rows_in == 120 and lazy.rows_rejected == 40
