"""run_pipeline: retries with back-off, statuses, the run record of spec section 6 and its storage."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from engine.connectors import registry
from engine.connectors.base import DEFAULT_BATCH_ROWS, Connector, ConnectorConfig, Source
from engine.errors import ConnectorError
from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace
from tests.conftest import RUN_RECORD_KEYS

RECORD_KEYS = RUN_RECORD_KEYS
NODE_KEYS = {"rows_in", "rows_out", "rows_rejected", "duration_s"}

# ---- a flaky test source: fails the first `fail_times` reads, then delivers -----------------------

ATTEMPTS: dict[str, int] = defaultdict(int)


class FlakyConfig(ConnectorConfig):
    key: str
    fail_times: int = 0
    error: str = "connector"  # connector | oserror


class FlakySource(Source):
    config: FlakyConfig

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        ATTEMPTS[self.config.key] += 1
        if ATTEMPTS[self.config.key] <= self.config.fail_times:
            if self.config.error == "oserror":
                raise ConnectionResetError(104, "connection reset by peer")
            raise ConnectorError(f"server {self.config.key} not reachable")
        yield pl.DataFrame({"id": [1, 2, 3], "value": [1.5, 2.5, 3.5]})

    def schema(self) -> pl.Schema:
        return pl.Schema({"id": pl.Int64, "value": pl.Float64})


class FlakyConnector(Connector):
    connector_type = "test_flaky"
    SourceConfig = FlakyConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> Source:
        return FlakySource(config, ctx, name)


@pytest.fixture(autouse=True, scope="module")
def flaky_connector():
    registry.register(FlakyConnector)
    yield
    registry._TYPES.pop("test_flaky", None)


@pytest.fixture(autouse=True)
def fresh_attempts():
    ATTEMPTS.clear()


def flaky_doc(key: str, fail_times: int, max_retries: int, error: str = "connector", **policy) -> dict:
    config = {"key": key, "fail_times": fail_times, "error": error}
    return {
        "name": f"flaky {key}",
        "sources": [{"name": "meter", "connector_type": "test_flaky", "config": config}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": f"{key}.json"}}],
        "error_handling": {
            "retry_policy": {
                "max_retries": max_retries,
                "backoff_multiplier": 2,
                "initial_delay_seconds": 1,
                **policy,
            }
        },
    }


class Sleeps:
    """A `sleep=` that records the delays (and, while waiting, what the store says about the run)."""

    def __init__(self, ws: Workspace | None = None, pipeline: str | None = None):
        self.delays: list[float] = []
        self.statuses: list[str] = []
        self.ws, self.pipeline = ws, pipeline

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.ws is not None:
            self.statuses.append(self.ws.metadata.runs(pipeline=self.pipeline)[0]["status"])


def messages(ws: Workspace, run_id: str) -> list[str]:
    return [line["message"] for line in ws.metadata.logs(run_id)]


# ---- retries -----------------------------------------------------------------------------------


def test_connector_errors_are_retried_with_exponential_backoff(tmp_path):
    with Workspace(tmp_path / "data") as ws:
        sleeps = Sleeps(ws, "flaky a1")
        record = run_pipeline(validate(flaky_doc("a1", 2, 3)), ws, base_dir=tmp_path, sleep=sleeps)
        assert record["status"] == "success", record["error"]
        assert record["error"] is None
        assert sleeps.delays == [1, 2]  # initial_delay * multiplier ** (attempt - 1)
        assert sleeps.statuses == ["retrying", "retrying"]
        assert ATTEMPTS["a1"] == 3
        stored = ws.metadata.run(record["run_id"])
        assert stored["status"] == "success" and stored["attempt"] == 3 and stored["error"] is None
        log = messages(ws, record["run_id"])
        retries = [m for m in log if "retrying" in m]
        assert len(retries) == 2
        assert "attempt 1 failed" in retries[0] and "server a1 not reachable" in retries[0]
        assert "retrying in 1s" in retries[0] and "retrying in 2s" in retries[1]
        assert log[-1] == "run success"
    assert json.loads((tmp_path / "a1.json").read_text())[0] == {"id": 1, "value": 1.5}


def test_io_errors_are_retried_too(tmp_path):
    with Workspace(tmp_path / "data") as ws:
        sleeps = Sleeps()
        doc = flaky_doc("io1", 1, 2, error="oserror")
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path, sleep=sleeps)
    assert record["status"] == "success", record["error"]
    assert sleeps.delays == [1] and ATTEMPTS["io1"] == 2


def test_retries_give_up_after_max_retries(tmp_path):
    events: list[dict] = []
    with Workspace(tmp_path / "data") as ws:
        sleeps = Sleeps()
        record = run_pipeline(
            validate(flaky_doc("b1", 2, 1)), ws, base_dir=tmp_path, sleep=sleeps, on_event=events.append
        )
        assert record["status"] == "failed"
        assert "server b1 not reachable" in record["error"]
        assert sleeps.delays == [1]
        assert ATTEMPTS["b1"] == 2
        assert ws.metadata.run(record["run_id"])["attempt"] == 2
        assert messages(ws, record["run_id"])[-1].startswith("run failed: ")
    retrying = [e for e in events if e["event"] == "retrying"]
    assert [(e["run_id"], e["attempt"], e["delay_s"]) for e in retrying] == [(record["run_id"], 2, 1)]
    finished = events[-1]
    assert {k: finished[k] for k in ("event", "run_id", "status")} == {
        "event": "run_finished",
        "run_id": record["run_id"],
        "status": "failed",
    }
    assert finished["duration_s"] == record["duration_s"] and finished["error"] == record["error"]
    assert not (tmp_path / "b1.json").exists()


def test_backoff_is_capped_by_max_delay(tmp_path):
    with Workspace(tmp_path / "data") as ws:
        sleeps = Sleeps()
        doc = flaky_doc("c1", 3, 5, backoff_multiplier=10, max_delay_seconds=15)
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path, sleep=sleeps)
    assert record["status"] == "success"
    assert sleeps.delays == [1, 10, 15]


def test_cancel_during_backoff_ends_the_run_cancelled(tmp_path):
    cancel = threading.Event()

    def sleep(seconds: float) -> None:
        cancel.set()  # the user cancels while the run waits for its next attempt

    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(
            validate(flaky_doc("d1", 2, 3)), ws, base_dir=tmp_path, sleep=sleep, cancel=cancel
        )
        assert record["status"] == "cancelled"
        assert ATTEMPTS["d1"] == 1
        assert ws.metadata.run(record["run_id"])["status"] == "cancelled"


def orders_doc(path: str = "orders.json", **extra) -> dict:
    return {
        "name": "Daily orders",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": path}}],
        "transformations": [
            {"type": "field_mapping", "field_name": "customer_name", "operation": "title_case"},
            {
                "type": "record_filter",
                "condition": {"field": "status", "operator": "equals", "value": "completed"},
            },
            {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"},
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
        **extra,
    }


ORDERS = [
    {
        "order_id": 1,
        "customer_name": "john smith",
        "customer_email": "john@example.com",
        "status": "completed",
    },
    {"order_id": 2, "customer_name": "MARY JONES", "customer_email": "mary@example", "status": "completed"},
    {"order_id": 3, "customer_name": "ann lee", "customer_email": "ann@example.com", "status": "cancelled"},
    {"order_id": 4, "customer_name": "bo li", "customer_email": "bo@", "status": "completed"},
]
RETRY = {"retry_policy": {"max_retries": 3, "initial_delay_seconds": 1}}


def test_data_errors_are_not_retried(tmp_path):
    (tmp_path / "orders.json").write_text('[{"order_id": 1, "customer_name": "a"},\n {"order_id": 2, "cust')
    with Workspace(tmp_path / "data") as ws:
        sleeps = Sleeps()
        record = run_pipeline(validate(orders_doc(error_handling=RETRY)), ws, base_dir=tmp_path, sleep=sleeps)
        assert record["status"] == "failed"
        assert "orders.json" in record["error"]
        assert sleeps.delays == []
        assert ws.metadata.run(record["run_id"])["attempt"] == 1
        assert not any("retrying" in m for m in messages(ws, record["run_id"]))


def test_failed_validation_is_not_retried(tmp_path):
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    doc = orders_doc(error_handling=RETRY)
    doc["transformations"][2]["on_failure"] = "fail"
    with Workspace(tmp_path / "data") as ws:
        sleeps = Sleeps()
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path, sleep=sleeps)
    assert record["status"] == "failed" and "field_validation_3" in record["error"]
    assert sleeps.delays == []


# ---- statuses and the run record ---------------------------------------------------------------


def check_record(record: dict, doc_nodes: dict[str, str]) -> None:
    """The record has spec section 6's keys, Z timestamps and totals that agree with its nodes."""
    assert set(record) - {"_targets"} == RECORD_KEYS  # `_targets` is the runner's note to the CLI
    assert set(record["nodes"]) == set(doc_nodes)
    for stats in record["nodes"].values():
        assert set(stats) == NODE_KEYS and stats["duration_s"] >= 0
    for stamp in ("started_at", "finished_at"):
        assert record[stamp].endswith("Z")
        datetime.fromisoformat(record[stamp].replace("Z", "+00:00"))
    assert record["finished_at"] >= record["started_at"] and record["duration_s"] >= 0
    nodes = record["nodes"]
    assert record["rows_in"] == sum(nodes[n]["rows_out"] for n, kind in doc_nodes.items() if kind == "source")
    assert record["rows_rejected"] == sum(s["rows_rejected"] for s in nodes.values())


@pytest.mark.parametrize(
    ("orders", "status", "counts"),
    [
        ([ORDERS[0], ORDERS[2]], "success", (2, 1, 0)),
        (ORDERS, "warning", (4, 1, 2)),
    ],
    ids=["success", "warning"],
)
def test_status_and_record(tmp_path, orders, status, counts):
    (tmp_path / "orders.json").write_text(json.dumps(orders))
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(orders_doc()), ws, base_dir=tmp_path, spec_path="p.json")
        kinds = {"orders": "source", "field_mapping_1": "transform", "record_filter_2": "transform"}
        kinds |= {"field_validation_3": "transform", "out": "destination"}
        check_record(record, kinds)
        assert record["status"] == status and record["error"] is None
        assert record["pipeline"] == "Daily orders"
        assert (record["rows_in"], record["rows_out"], record["rows_rejected"]) == counts
        assert record["rows_out"] == record["nodes"]["out"]["rows_in"] == record["nodes"]["out"]["rows_out"]
        assert record["nodes"]["field_validation_3"]["rows_rejected"] == counts[2]
        assert record["_targets"] == {"out": str(tmp_path / "out.json")}

        stored = ws.metadata.run(record["run_id"])
        for k in ("status", "started_at", "finished_at", "rows_in", "rows_out", "rows_rejected", "error"):
            assert stored[k] == record[k], k
        assert stored["spec_path"] == "p.json" and stored["trigger"] == "manual" and stored["version"] == 1
        node_stats = {s["node_id"]: s for s in ws.metadata.node_stats(record["run_id"])}
        assert set(node_stats) == set(kinds)
        for nid, s in node_stats.items():
            assert {k: s[k] for k in NODE_KEYS} == record["nodes"][nid]
            assert s["kind"] == kinds[nid] and s["status"] == "success"
        log = messages(ws, record["run_id"])
        assert log[0] == "run started (manual)" and log[-1] == f"run {status}"
    assert json.loads((tmp_path / "out.json").read_text()) == [{**ORDERS[0], "customer_name": "John Smith"}]


def test_failed_status_and_record(tmp_path):
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(orders_doc("missing.json")), ws, base_dir=tmp_path)
        assert record["status"] == "failed"
        assert set(record) - {"_targets"} == RECORD_KEYS
        assert "missing.json" in record["error"] and "not found" in record["error"]
        assert "\n" not in record["error"]
        assert record["rows_out"] == 0 and record["finished_at"].endswith("Z")
        assert ws.metadata.run(record["run_id"])["error"] == record["error"]
        assert ws.metadata.runs(status="failed")[0]["run_id"] == record["run_id"]
        assert ws.metadata.logs(record["run_id"])[-1]["level"] == "error"


def test_runs_are_stored_and_versions_follow_the_document(tmp_path):
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    with Workspace(tmp_path / "data") as ws:
        first = run_pipeline(validate(orders_doc()), ws, base_dir=tmp_path)
        second = run_pipeline(validate(orders_doc()), ws, base_dir=tmp_path)
        changed = orders_doc()
        changed["transformations"][0]["operation"] = "uppercase"
        third = run_pipeline(validate(changed), ws, base_dir=tmp_path)

        runs = ws.metadata.runs(pipeline="Daily orders")
        assert [r["run_id"] for r in runs] == [third["run_id"], second["run_id"], first["run_id"]]
        assert [r["version"] for r in runs] == [2, 1, 1]
        assert [v["version"] for v in ws.metadata.pipeline_versions("Daily orders")] == [1, 2]
        assert (
            ws.metadata.pipeline_spec("Daily orders", 1)["nodes"][1]["transform"]["operation"] == "title_case"
        )
        assert ws.metadata.pipeline_spec("Daily orders")["nodes"][1]["transform"]["operation"] == "uppercase"
        assert len({first["run_id"], second["run_id"], third["run_id"]}) == 3
    # Stored on disk: a new workspace on the same folder sees the history.
    with Workspace(tmp_path / "data") as ws:
        assert len(ws.metadata.runs()) == 3
        assert len(ws.metadata.node_stats(first["run_id"])) == 5


# ---- rejects -----------------------------------------------------------------------------------


def test_rejects_are_kept_in_the_historian(tmp_path):
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(orders_doc()), ws, base_dir=tmp_path)
        other = run_pipeline(validate(orders_doc()), ws, base_dir=tmp_path)
        rejects = ws.historian.rejects(record["run_id"])
        assert rejects.height == 2 == record["rows_rejected"]
        assert set(rejects["run_id"]) == {record["run_id"]}
        assert set(rejects["node_id"]) == {"field_validation_3"}
        assert set(rejects["pipeline"]) == {"Daily orders"}
        assert all("customer_email" in r for r in rejects["reason"])
        kept = sorted((json.loads(r) for r in rejects["record"]), key=lambda r: r["order_id"])
        assert kept == [
            {**ORDERS[1], "customer_name": "Mary Jones"},
            {**ORDERS[3], "customer_name": "Bo Li"},
        ]
        assert ws.historian.rejects().height == 4  # both runs
        assert ws.historian.rejects(other["run_id"]).height == 2


def test_dead_letter_file_instead_of_the_reject_store(tmp_path):
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    doc = orders_doc(error_handling={"dead_letter_queue": {"enabled": True, "storage": "dlq/rejects.ndjson"}})
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "warning"
        assert ws.historian.rejects().height == 0
    lines = [
        json.loads(x) for x in (tmp_path / "dlq" / "rejects.ndjson").read_text().splitlines() if x.strip()
    ]
    assert [r["order_id"] for r in lines] == [2, 4]
    for line in lines:
        assert line["_run_id"] == record["run_id"] and line["_node_id"] == "field_validation_3"
        assert "customer_email" in line["_reject_reason"]
    assert lines[0]["customer_name"] == "Mary Jones"


def test_dead_letter_queue_disabled_keeps_no_rejects(tmp_path):
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    doc = orders_doc(error_handling={"dead_letter_queue": {"enabled": False}})
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "warning" and record["rows_rejected"] == 2
        assert ws.historian.rejects().height == 0
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["data", "orders.json", "out.json"]


def test_progress_events_per_node(tmp_path):
    """Live views follow a run through events: run started, each node's counts, run finished."""
    (tmp_path / "in.json").write_text(json.dumps([{"a": i, "b": f"x{i}"} for i in range(10)]))
    doc = {
        "name": "events",
        "sources": [{"name": "src", "connector_type": "file", "config": {"path": "in.json"}}],
        "transformations": [
            {"type": "record_filter", "condition": {"field": "a", "operator": "lt", "value": 4}}
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    events: list[dict] = []
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path, on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    last = {e["node"]: e for e in events if e["event"] == "node_progress"}
    assert last["src"]["rows_out"] == 10
    assert (last["record_filter_1"]["rows_in"], last["record_filter_1"]["rows_out"]) == (10, 4)
    assert events[-1]["status"] == record["status"] == "success"
