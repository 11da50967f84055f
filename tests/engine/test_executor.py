"""The push-based DAG executor, run for real: files and DuckDB in tmp_path, test peers as connectors.

`probe` is a test source (batches on demand, records which thread read them and when, can sleep or
fail) and `recorder` a test sink (records every write, commit and abort). They are registered as
connector types for this module only, next to the real `file` and `duckdb` connectors.
"""

from __future__ import annotations

import csv
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.connectors import registry
from engine.connectors.base import DEFAULT_BATCH_ROWS, Connector, ConnectorConfig, Sink, Source
from engine.runner import preview_pipeline, run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace

# ---- test peers: a probe source and a recording sink -------------------------------------------

READS: dict[str, list[dict[str, Any]]] = defaultdict(list)
SINKS: dict[str, dict[str, Any]] = defaultdict(lambda: {"writes": [], "committed": False, "aborted": False})


class ProbeConfig(ConnectorConfig):
    key: str
    batches: int = 3
    rows: int = 2
    delay: float = 0.0  # seconds slept after each batch
    fail_after: int | None = None  # raise when about to read this batch (0-based)
    bad_email_from: int | None = None  # batches from this one on carry an invalid e-mail


PROBE_SCHEMA = pl.Schema({"source": pl.String, "batch": pl.Int64, "i": pl.Int64, "email": pl.String})


class ProbeSource(Source):
    config: ProbeConfig

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        cfg = self.config
        sent = 0
        for b in range(cfg.batches):
            if cfg.fail_after is not None and b == cfg.fail_after:
                raise RuntimeError(f"probe {cfg.key} broke at batch {b}")
            start = time.perf_counter()
            ids = list(range(b * cfg.rows, (b + 1) * cfg.rows))
            bad = cfg.bad_email_from is not None and b >= cfg.bad_email_from
            batch = pl.DataFrame(
                {
                    "source": [cfg.key] * cfg.rows,
                    "batch": [b] * cfg.rows,
                    "i": ids,
                    "email": ["broken" if bad else f"user{i}@example.com" for i in ids],
                },
                schema=PROBE_SCHEMA,
            )
            if limit is not None:
                batch = batch.head(limit - sent)
            READS[cfg.key].append(
                {
                    "thread": threading.current_thread().name,
                    "start": start,
                    "end": time.perf_counter(),
                    "batch": b,
                }
            )
            yield batch
            sent += batch.height
            if limit is not None and sent >= limit:
                return
            time.sleep(cfg.delay)

    def schema(self) -> pl.Schema:
        return PROBE_SCHEMA


class RecorderConfig(ConnectorConfig):
    key: str


class RecorderSink(Sink):
    config: RecorderConfig

    def open(self) -> None:
        SINKS[self.config.key]["opened"] = True

    def write(self, batch: pl.DataFrame) -> None:
        SINKS[self.config.key]["writes"].append(
            {"frame": batch, "at": time.perf_counter(), "thread": threading.current_thread().name}
        )

    def close(self) -> None:
        SINKS[self.config.key]["committed"] = True

    def abort(self) -> None:
        SINKS[self.config.key]["aborted"] = True


class ProbeConnector(Connector):
    connector_type = "test_probe"
    SourceConfig = ProbeConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> Source:
        return ProbeSource(config, ctx, name)


class RecorderConnector(Connector):
    connector_type = "test_recorder"
    SinkConfig = RecorderConfig

    @classmethod
    def make_sink(cls, config, ctx, name: str) -> Sink:
        return RecorderSink(config, ctx, name)


@pytest.fixture(autouse=True, scope="module")
def test_connectors():
    registry.register(ProbeConnector)
    registry.register(RecorderConnector)
    yield
    registry._TYPES.pop("test_probe", None)
    registry._TYPES.pop("test_recorder", None)


def key() -> str:
    return uuid.uuid4().hex[:10]


def probe(node_id: str, k: str, **config) -> dict:
    return {"id": node_id, "kind": "source", "connector_type": "test_probe", "config": {"key": k, **config}}


def recorder(node_id: str, inputs: list[str], k: str) -> dict:
    return {
        "id": node_id,
        "kind": "destination",
        "inputs": inputs,
        "connector_type": "test_recorder",
        "config": {"key": k},
    }


def written(k: str) -> pl.DataFrame:
    frames = [w["frame"] for w in SINKS[k]["writes"] if w["frame"].width]
    return pl.concat(frames) if frames else pl.DataFrame()


def tables(ws: Workspace) -> dict[str, list[tuple]]:
    cur = ws.historian.cursor()
    try:
        names = [r[0] for r in cur.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {n: cur.execute(f'SELECT * FROM "{n}" ORDER BY ALL').fetchall() for n in names}
    finally:
        cur.close()


# ---- a DAG with two sources, a join, a split and a validation ----------------------------------

ORDERS = [
    {"order_id": 1, "customer_id": 10, "amount": 50.0, "email": "a@example.com"},
    {"order_id": 2, "customer_id": 11, "amount": 150.0, "email": "bad"},
    {"order_id": 3, "customer_id": 10, "amount": 250.0, "email": "c@example.com"},
    {"order_id": 4, "customer_id": 12, "amount": 20.0, "email": "d@example.com"},
    {"order_id": 5, "customer_id": 99, "amount": 500.0, "email": "e@example.com"},  # no customer
    {"order_id": 6, "customer_id": 12, "amount": None, "email": "f@example.com"},  # no branch
]
CUSTOMERS_CSV = "customer_id,region\n10,north\n11,south\n12,north\n"


def dag_doc() -> dict:
    return {
        "name": "Orders by size",
        "nodes": [
            {"id": "orders", "kind": "source", "connector_type": "file", "config": {"path": "orders.json"}},
            {
                "id": "customers",
                "kind": "source",
                "connector_type": "file",
                "config": {"path": "customers.csv"},
            },
            {
                "id": "joined",
                "kind": "transform",
                "inputs": ["orders", "customers"],
                "transform": {
                    "type": "join",
                    "join_type": "inner",
                    "primary_key": "customer_id",
                    "foreign_key": "customer_id",
                },
            },
            {
                "id": "check",
                "kind": "transform",
                "inputs": ["joined"],
                "transform": {
                    "type": "field_validation",
                    "field_name": "email",
                    "validation_type": "email_format",
                },
            },
            {
                "id": "route",
                "kind": "transform",
                "inputs": ["check"],
                "transform": {
                    "type": "split",
                    "branches": [
                        {"name": "big", "condition": {"field": "amount", "operator": "gte", "value": 100}},
                        {"name": "small", "condition": {"field": "amount", "operator": "lt", "value": 100}},
                    ],
                },
            },
            {
                "id": "big_out",
                "kind": "destination",
                "inputs": ["route.big"],
                "connector_type": "file",
                "config": {"path": "out/big.json"},
            },
            {
                "id": "small_out",
                "kind": "destination",
                "inputs": ["route.small"],
                "connector_type": "file",
                "config": {"path": "out/small.csv"},
            },
            {
                "id": "bad_out",
                "kind": "destination",
                "inputs": ["check.rejected"],
                "connector_type": "file",
                "config": {"path": "out/bad.ndjson"},
            },
        ],
    }


def write_dag_inputs(folder: Path) -> None:
    (folder / "orders.json").write_text(json.dumps(ORDERS))
    (folder / "customers.csv").write_text(CUSTOMERS_CSV)


def test_graph_dag_counts_every_node_and_writes_every_output(tmp_path):
    write_dag_inputs(tmp_path)
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(dag_doc()), ws, base_dir=tmp_path)

    assert record["status"] == "warning", record["error"]
    counts = {nid: (n["rows_in"], n["rows_out"], n["rows_rejected"]) for nid, n in record["nodes"].items()}
    assert counts == {
        "orders": (0, 6, 0),
        "customers": (0, 3, 0),
        "joined": (9, 5, 0),  # order 5 has no customer
        "check": (5, 4, 1),  # order 2's e-mail is invalid
        "route": (4, 4, 0),  # big 1, small 2, default 1 (the null amount)
        "big_out": (1, 1, 0),
        "small_out": (2, 2, 0),
        "bad_out": (1, 1, 0),
    }
    # In: every source row. Out: rows on the ports feeding destinations, except `rejected`.
    assert (record["rows_in"], record["rows_out"], record["rows_rejected"]) == (9, 3, 1)

    out = tmp_path / "out"
    assert json.loads((out / "big.json").read_text()) == [
        {"order_id": 3, "customer_id": 10, "amount": 250.0, "email": "c@example.com", "region": "north"}
    ]
    with open(out / "small.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == [
            {
                "order_id": "1",
                "customer_id": "10",
                "amount": "50.0",
                "email": "a@example.com",
                "region": "north",
            },
            {
                "order_id": "4",
                "customer_id": "12",
                "amount": "20.0",
                "email": "d@example.com",
                "region": "north",
            },
        ]
    bad = [json.loads(line) for line in (out / "bad.ndjson").read_text().splitlines() if line.strip()]
    assert bad == [
        {
            "order_id": 2,
            "customer_id": 11,
            "amount": 150.0,
            "email": "bad",
            "region": "south",
            "_reject_reason": "email: not a valid email address",
        }
    ]
    assert sorted(p.name for p in out.iterdir()) == ["bad.ndjson", "big.json", "small.csv"]


# ---- concurrency and streaming -----------------------------------------------------------------


def test_independent_sources_are_read_concurrently_on_their_own_threads(tmp_path):
    a, b, sink = key(), key(), key()
    doc = {
        "name": "two sources",
        "nodes": [
            probe("left", a, batches=5, rows=3, delay=0.04),
            probe("right", b, batches=5, rows=3, delay=0.04),
            {"id": "both", "kind": "transform", "inputs": ["left", "right"], "transform": {"type": "union"}},
            recorder("out", ["both"], sink),
        ],
    }
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
    assert record["status"] == "success", record["error"]

    threads_a = {r["thread"] for r in READS[a]}
    threads_b = {r["thread"] for r in READS[b]}
    main = threading.current_thread().name
    assert len(threads_a) == 1 and len(threads_b) == 1
    assert threads_a != threads_b and main not in threads_a | threads_b
    span_a = (READS[a][0]["start"], READS[a][-1]["end"])
    span_b = (READS[b][0]["start"], READS[b][-1]["end"])
    # Each source takes ~0.16 s of sleeps; read one after the other, the spans could not overlap.
    assert max(span_a[0], span_b[0]) < min(span_a[1], span_b[1]), (span_a, span_b)
    assert sorted(written(sink)["source"].to_list()) == sorted([a] * 15 + [b] * 15)
    assert SINKS[sink]["committed"] and not SINKS[sink]["aborted"]


def test_row_local_chain_streams_batches_to_the_destination(tmp_path):
    src, sink = key(), key()
    doc = {
        "name": "streaming",
        "nodes": [
            probe("ticks", src, batches=20, rows=5, delay=0.01),
            {
                "id": "upper",
                "kind": "transform",
                "inputs": ["ticks"],
                "transform": {"type": "field_mapping", "field_name": "email", "operation": "uppercase"},
            },
            {
                "id": "late",
                "kind": "transform",
                "inputs": ["upper"],
                "transform": {
                    "type": "record_filter",
                    "condition": {"field": "i", "operator": "gte", "value": 10},
                },
            },
            recorder("out", ["late"], sink),
        ],
    }
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
    assert record["status"] == "success", record["error"]

    writes = [w for w in SINKS[sink]["writes"] if w["frame"].height]
    assert len(writes) >= 5, "row-local nodes must hand batches on, not wait for the whole input"
    # The destination was already writing while the source was still reading.
    assert writes[0]["at"] < READS[src][-1]["start"]
    assert all(w["thread"] == "sink-out" for w in SINKS[sink]["writes"])
    out = written(sink)
    assert out["i"].to_list() == list(range(10, 100))
    assert out["email"].to_list() == [f"USER{i}@EXAMPLE.COM" for i in range(10, 100)]
    assert record["nodes"]["late"] == {**record["nodes"]["late"], "rows_in": 100, "rows_out": 90}


@pytest.mark.parametrize(
    "step",
    [
        {"type": "sort", "fields": ["i"], "descending": True},
        {
            "type": "aggregation",
            "group_by_fields": ["source"],
            "aggregated_fields": [
                {"input_field": "i", "output_field": "n", "operation": "count"},
                {"input_field": "i", "output_field": "top", "operation": "max"},
            ],
        },
    ],
    ids=["sort", "aggregation"],
)
def test_blocking_node_sees_all_rows_at_once(tmp_path, step):
    src, sink = key(), key()
    doc = {
        "name": "blocking",
        "nodes": [
            probe("ticks", src, batches=10, rows=4, delay=0.005),
            {"id": "block", "kind": "transform", "inputs": ["ticks"], "transform": step},
            recorder("out", ["block"], sink),
        ],
    }
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
    assert record["status"] == "success", record["error"]

    writes = [w for w in SINKS[sink]["writes"] if w["frame"].height]
    assert len(writes) == 1
    assert writes[0]["at"] > READS[src][-1]["end"]
    out = writes[0]["frame"]
    if step["type"] == "sort":
        assert out["i"].to_list() == list(range(39, -1, -1))  # one order across all ten batches
        assert record["nodes"]["block"] == {**record["nodes"]["block"], "rows_in": 40, "rows_out": 40}
    else:
        assert out.select("source", "n", "top").rows() == [(src, 40, 39)]  # one group, not ten
        assert record["nodes"]["block"] == {**record["nodes"]["block"], "rows_in": 40, "rows_out": 1}


# ---- atomicity and cancellation ----------------------------------------------------------------


def failing_doc(src: str, sink: str, failure: str, duck_mode: str) -> dict:
    source = (
        probe("orders", src, batches=4, rows=3, fail_after=2)
        if failure == "source"
        else probe("orders", src, batches=4, rows=3, bad_email_from=2)
    )
    check = {"type": "field_validation", "field_name": "email", "validation_type": "email_format"}
    if failure == "validation":
        check["on_failure"] = "fail"
    return {
        "name": "atomic",
        "nodes": [
            source,
            {"id": "check", "kind": "transform", "inputs": ["orders"], "transform": check},
            {
                "id": "file_out",
                "kind": "destination",
                "inputs": ["check"],
                "connector_type": "file",
                "config": {"path": "out.json"},
            },
            {
                "id": "db_out",
                "kind": "destination",
                "inputs": ["check"],
                "connector_type": "duckdb",
                "config": {"table": "orders", "mode": duck_mode},
            },
            recorder("probe_out", ["check"], sink),
        ],
    }


@pytest.mark.parametrize("duck_mode", ["append", "replace"])
@pytest.mark.parametrize(
    ("failure", "node"), [("source", "orders"), ("validation", "check")], ids=["source", "validation"]
)
def test_failed_run_commits_no_destination(tmp_path, failure, node, duck_mode):
    src, sink = key(), key()
    with Workspace(tmp_path / "data") as ws:
        cur = ws.historian.cursor()
        cur.execute("CREATE TABLE orders AS SELECT 'old' AS source, -1 AS batch, -1 AS i, 'x@y.org' AS email")
        cur.close()
        record = run_pipeline(validate(failing_doc(src, sink, failure, duck_mode)), ws, base_dir=tmp_path)

        assert record["status"] == "failed"
        assert f"'{node}'" in record["error"] and "\n" not in record["error"]
        assert record["error"].startswith(("source 'orders'", "node 'check'"))
        # Two batches went through before the failure: they were written, then thrown away.
        assert written(sink).height == 6
        assert SINKS[sink]["aborted"] and not SINKS[sink]["committed"]
        assert tables(ws)["orders"] == [("old", -1, -1, "x@y.org")]
    assert not (tmp_path / "out.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "a temporary file was left behind"


def test_failed_run_leaves_no_new_table(tmp_path):
    src, sink = key(), key()
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(failing_doc(src, sink, "source", "append")), ws, base_dir=tmp_path)
        assert record["status"] == "failed"
        assert "orders" not in tables(ws)
        assert record["nodes"]["db_out"]["rows_out"] == 0 and record["rows_out"] == 0


def test_cancelled_run_writes_nothing(tmp_path):
    src, sink = key(), key()
    doc = {
        "name": "slow",
        "nodes": [
            probe("slow", src, batches=200, rows=2, delay=0.02),
            {
                "id": "file_out",
                "kind": "destination",
                "inputs": ["slow"],
                "connector_type": "file",
                "config": {"path": "out.csv"},
            },
            {
                "id": "db_out",
                "kind": "destination",
                "inputs": ["slow"],
                "connector_type": "duckdb",
                "config": {"table": "ticks"},
            },
            recorder("probe_out", ["slow"], sink),
        ],
    }
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    with Workspace(tmp_path / "data") as ws:
        t0 = time.perf_counter()
        timer.start()
        try:
            record = run_pipeline(validate(doc), ws, base_dir=tmp_path, cancel=cancel)
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - t0

        assert record["status"] == "cancelled" and record["error"] == "run cancelled"
        assert elapsed < 2.5, "the run took as long as the whole source: cancel was not seen"
        assert 0 < len(READS[src]) < 200
        assert SINKS[sink]["writes"], "the test should cancel a run that had started writing"
        assert SINKS[sink]["aborted"] and not SINKS[sink]["committed"]
        assert "ticks" not in tables(ws)
        assert ws.metadata.run(record["run_id"])["status"] == "cancelled"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ---- preview -----------------------------------------------------------------------------------


def test_preview_samples_every_node_and_port_and_writes_nothing(tmp_path):
    write_dag_inputs(tmp_path)
    with Workspace(tmp_path / "data") as ws:
        result = preview_pipeline(validate(dag_doc()), ws, base_dir=tmp_path, limit=2)
        samples = result["samples"]
        assert all(df.height <= 2 for df in samples.values())
        assert samples[("orders", "out")]["order_id"].to_list() == [1, 2]
        assert samples[("customers", "out")]["region"].to_list() == ["north", "south"]
        assert samples[("joined", "out")].height == 2
        assert samples[("check", "rejected")]["order_id"].to_list() == [2]
        assert "_reject_reason" in samples[("check", "rejected")].columns
        assert samples[("route", "big")]["order_id"].to_list() == [3]
        assert samples[("route", "small")]["order_id"].to_list() == [1, 4]
        assert samples[("route", "default")]["order_id"].to_list() == [6]
        assert samples[("small_out", "out")]["order_id"].to_list() == [1, 4]
        # The statistics are the whole (sampled) run's, not the shown rows'.
        assert result["stats"]["orders"].rows_out == 6
        assert result["stats"]["check"].rows_rejected == 1

        assert ws.metadata.runs() == []
        assert ws.historian.rejects().height == 0
    assert not (tmp_path / "out").exists()


def test_preview_reads_only_a_sample_of_each_source(tmp_path):
    src, sink = key(), key()
    doc = {
        "name": "sample",
        "nodes": [probe("ticks", src, batches=50, rows=10), recorder("out", ["ticks"], sink)],
    }
    with Workspace(tmp_path / "data") as ws:
        result = preview_pipeline(validate(doc), ws, base_dir=tmp_path, limit=3, sample_rows=25)
    assert result["stats"]["ticks"].rows_out == 25
    assert len(READS[src]) == 3  # it stopped reading after the sample
    assert result["samples"][("ticks", "out")]["i"].to_list() == [0, 1, 2]
    assert result["samples"][("out", "out")].height == 3
    assert "opened" not in SINKS[sink] and SINKS[sink]["writes"] == []


def test_an_empty_source_file_gives_an_empty_successful_run(tmp_path):
    """A zero-byte export (a shift with no orders) is not an error: the run succeeds with no rows."""
    (tmp_path / "empty.csv").write_bytes(b"")
    doc = {
        "name": "empty",
        "sources": [{"name": "src", "connector_type": "file", "config": {"path": "empty.csv"}}],
        "transformations": [
            {"type": "field_mapping", "field_name": "name", "operation": "trim"},
            {"type": "sort", "fields": ["name"]},
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
    assert record["status"] == "success", record["error"]
    assert (record["rows_in"], record["rows_out"]) == (0, 0)
    assert json.loads((tmp_path / "out.json").read_text()) == []


def test_a_failed_run_keeps_no_rejected_records(tmp_path):
    """Rejects are committed with the run's outputs: a run that fails after rejecting records leaves
    none in the reject store, so its retry cannot store them twice."""
    src, sink = key(), key()
    doc = {
        "name": "fails after rejects",
        "nodes": [
            probe("src", src, batches=4, rows=3, bad_email_from=0, fail_after=2),
            {
                "id": "check",
                "kind": "transform",
                "inputs": ["src"],
                "transform": {
                    "type": "field_validation",
                    "field_name": "email",
                    "validation_type": "email_format",
                },
            },
            recorder("out", ["check"], sink),
        ],
    }
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "failed"
        assert record["nodes"]["check"]["rows_rejected"] == 6  # two batches were rejected before the failure
        assert ws.historian.rejects(record["run_id"]).height == 0
    assert SINKS[sink]["aborted"] and not SINKS[sink]["committed"]


def test_a_successful_run_commits_its_rejected_records_once(tmp_path):
    src, sink = key(), key()
    doc = {
        "name": "rejects",
        "nodes": [
            probe("src", src, batches=4, rows=3, bad_email_from=2),
            {
                "id": "check",
                "kind": "transform",
                "inputs": ["src"],
                "transform": {
                    "type": "field_validation",
                    "field_name": "email",
                    "validation_type": "email_format",
                },
            },
            recorder("out", ["check"], sink),
        ],
    }
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        rejects = ws.historian.rejects(record["run_id"])
    assert record["status"] == "warning" and record["rows_rejected"] == 6
    assert rejects.height == 6 and set(rejects["node_id"]) == {"check"}
