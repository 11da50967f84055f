"""Prometheus metrics (issue 10, item 4): real pipelines and real streams run through the engine
(LocalEngine) with `EngineMetrics` subscribed; the exposition text must carry their numbers."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from engine.api.local import LocalEngine
from engine.connectors import registry
from engine.connectors.base import Connector, ConnectorConfig, StreamingSource
from engine.service.metrics import EngineMetrics, render
from engine.tags import TagBatchBuilder
from tests.engine.streaming_sources import TicksConnector
from tests.engine.test_streaming import SlowConnector


# ---- a source whose session drops once and comes back (as a field device's link does) --------------
class FlapConfig(ConnectorConfig):
    rows: int = 10


class FlapSource(StreamingSource):
    """connecting -> connected, one batch, lost -> reconnecting -> connected, one more batch."""

    config: FlapConfig

    def start(self, emit) -> None:
        self.set_state("connecting", "flap://device")
        self._thread = threading.Thread(target=self._run, args=(emit,), daemon=True)
        self._thread.start()

    def _run(self, emit) -> None:
        builder = TagBatchBuilder(self.name)
        self.set_state("connected", "flap://device")
        for value in range(self.config.rows):
            builder.extend(["dev.temp"], [value], timestamp=datetime.now(UTC))
        emit(builder.take())
        self.set_state("lost", "connection reset by peer")
        self.set_state("reconnecting", "connection reset by peer")
        self.set_state("connected", "flap://device")
        for value in range(self.config.rows, 2 * self.config.rows):
            builder.extend(["dev.temp"], [value], timestamp=datetime.now(UTC))
        emit(builder.take())

    def stop(self) -> None:
        self._thread.join()
        self.set_state("stopped")


class FlapConnector(Connector):
    connector_type = "test_flap"
    SourceConfig = FlapConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> StreamingSource:
        return FlapSource(config, ctx, name)


@pytest.fixture(autouse=True)
def _connectors():
    for connector in (TicksConnector, SlowConnector, FlapConnector):
        registry.register(connector)


@pytest.fixture
def engine(tmp_path):
    with LocalEngine(tmp_path / "data", workers=1) as eng:
        yield eng


@pytest.fixture
def metrics(engine):
    found = EngineMetrics(CollectorRegistry())
    unsubscribe = found.attach(engine)
    yield found
    unsubscribe()


def scrape(metrics: EngineMetrics) -> dict[tuple[str, frozenset], float]:
    """The exposition text, parsed: (sample name, labels) -> value."""
    body, content_type = render(metrics.registry)
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.endswith("_created"):  # when a series began: not a count
                continue
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def stream_doc(source: dict, dest: dict | None = None, **schedule) -> dict:
    return {
        "name": "live",
        "nodes": [
            {"id": "src", "kind": "source", **source},
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["src"],
                **(dest or {"connector_type": "duckdb", "config": {"table": "live"}}),
            },
        ],
        "schedule": {"type": "real_time", **schedule},
    }


# ---- batch runs ------------------------------------------------------------------------------------
def orders(tmp_path: Path, path: str = "orders.csv", retries: int = 0) -> dict:
    (tmp_path / "orders.csv").write_text("id,email\n1,a@b.com\n2,bad\n3,c@d.org\n4,nope\n5,e@f.net\n")
    return {
        "name": "Orders",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": path}}],
        "transformations": [
            {"type": "field_validation", "field_name": "email", "validation_type": "email_format"}
        ],
        "destinations": [{"name": "db", "connector_type": "duckdb", "config": {"table": "orders"}}],
        "error_handling": {"retry_policy": {"max_retries": retries, "initial_delay_seconds": 0.01}},
    }


def test_rows_per_node_runs_by_status_and_durations(tmp_path, engine, metrics):
    records = [engine.runs.start(orders(tmp_path), base_dir=tmp_path).result(timeout=60) for _ in range(2)]
    failed = engine.runs.start(orders(tmp_path, "missing.csv", retries=1), base_dir=tmp_path).result(
        timeout=60
    )
    assert [r["status"] for r in records] == ["warning", "warning"] and failed["status"] == "failed"

    s = scrape(metrics)
    for node in records[0]["nodes"]:  # every node's counts, summed over both runs
        for count in ("rows_in", "rows_out", "rows_rejected"):
            expected = sum(r["nodes"][node][count] for r in records)
            assert value(s, f"aggregator_{count}_total", pipeline="Orders", node=node) == expected, (
                node,
                count,
            )
    assert value(s, "aggregator_rows_out_total", pipeline="Orders", node="orders") == 10  # 5 rows, twice
    assert value(s, "aggregator_rows_rejected_total", pipeline="Orders", node="field_validation_1") == 4
    assert value(s, "aggregator_runs_total", pipeline="Orders", status="warning") == 2
    assert value(s, "aggregator_runs_total", pipeline="Orders", status="failed") == 1
    assert value(s, "aggregator_retries_total", pipeline="Orders", node="") == 1
    assert value(s, "aggregator_run_duration_seconds_count", pipeline="Orders") == 3
    took = value(s, "aggregator_run_duration_seconds_sum", pipeline="Orders")
    assert took >= 0.9 * sum(r["duration_s"] for r in [*records, failed])


# ---- streams ---------------------------------------------------------------------------------------
def test_stream_rows_micro_batches_latency_and_source_state(engine, metrics):
    doc = stream_doc(
        {"connector_type": "test_ticks", "config": {"rows_per_batch": 10, "batches": 10, "interval_s": 0.01}},
        batch_size=20,
        max_latency_ms=50,
    )
    record = engine.runs.start(doc, seconds=1.3).result(timeout=60)
    assert record["status"] == "success" and record["rows_in"] == 100
    s = scrape(metrics)
    for node, stats in record["nodes"].items():
        for count in ("rows_in", "rows_out", "rows_rejected"):
            assert value(s, f"aggregator_{count}_total", pipeline="live", node=node) == stats[count], (
                node,
                count,
            )
    assert value(s, "aggregator_rows_in_total", pipeline="live", node="out") == 100
    batches = record["stream"]["micro_batches"]
    assert batches >= 5  # 100 rows, at most 20 a batch
    assert value(s, "aggregator_micro_batches_total", pipeline="live") == batches
    assert value(s, "aggregator_micro_batch_latency_seconds_count", pipeline="live") == batches
    worst = record["stream"]["latency_ms"]["max"] / 1000.0
    assert (
        0 < value(s, "aggregator_micro_batch_latency_seconds_sum", pipeline="live") <= batches * worst + 1e-3
    )
    assert value(s, "aggregator_source_state", pipeline="live", source="src", state="stopped") == 1
    assert value(s, "aggregator_source_state", pipeline="live", source="src", state="connected") == 0
    assert value(s, "aggregator_queue_rows", pipeline="live", source="src") >= 0  # from stream_stats
    assert value(s, "aggregator_runs_total", pipeline="live", status="success") == 1


def test_stream_drops_are_counted(engine, metrics):
    doc = stream_doc(
        {"connector_type": "test_ticks", "config": {"rows_per_batch": 50, "batches": 200}},
        dest={"connector_type": "test_slow_sink", "config": {"key": "metrics-drops", "delay_s": 0.05}},
        batch_size=100,
        max_latency_ms=50,
        queue_max_rows=500,
        block_timeout_s=0.01,
    )
    record = engine.runs.start(doc, seconds=1.2).result(timeout=60)
    dropped = record["stream"]["rows_dropped"]
    assert dropped > 0
    s = scrape(metrics)
    assert value(s, "aggregator_rows_dropped_total", pipeline="live", node="src") == dropped


def test_reconnects_are_counted(engine, metrics):
    doc = stream_doc(
        {"connector_type": "test_flap", "config": {"rows": 10}}, batch_size=10, max_latency_ms=50
    )
    record = engine.runs.start(doc, seconds=0.8).result(timeout=60)
    assert record["rows_in"] == 20
    s = scrape(metrics)
    assert value(s, "aggregator_source_reconnects_total", pipeline="live", source="src") == 1
    assert value(s, "aggregator_source_state", pipeline="live", source="src", state="lost") == 0


# ---- scheduler lag and the process ----------------------------------------------------------------
def test_scheduler_lag_and_process_metrics():
    metrics = EngineMetrics(CollectorRegistry())
    for lag in (0.05, 0.3, -0.01):  # a negative lag (clock read after the fire time) counts as 0
        metrics.observe_scheduler_lag(lag)
    s = scrape(metrics)
    assert value(s, "aggregator_scheduler_lag_seconds_count") == 3
    assert value(s, "aggregator_scheduler_lag_seconds_sum") == pytest.approx(0.35)
    assert value(s, "aggregator_scheduler_lag_seconds_bucket", le="0.1") == 2
    with open("/proc/self/status") as fh:
        rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    assert value(s, "process_resident_memory_bytes") == pytest.approx(rss_kb * 1024, rel=0.2)
    assert value(s, "process_open_fds") == pytest.approx(len(os.listdir("/proc/self/fd")), abs=5)
    assert value(s, "process_cpu_seconds_total") > 0


def test_typed_event_records_map_like_their_wire_dicts():
    from engine.api.events import event_from_dict

    wire = [
        {"event": "run_started", "run_id": "r", "pipeline": "P"},
        {
            "event": "node_progress",
            "run_id": "r",
            "node": "n",
            "rows_in": 7,
            "rows_out": 5,
            "rows_rejected": 2,
        },
        {"event": "run_finished", "run_id": "r", "status": "warning", "duration_s": 0.5},
    ]
    as_dicts, as_records = (
        EngineMetrics(CollectorRegistry(), process=False),
        EngineMetrics(CollectorRegistry(), process=False),
    )
    for event in wire:
        as_dicts.observe(json.loads(json.dumps(event)))
        as_records.observe(event_from_dict(event))
    assert scrape(as_dicts) == scrape(as_records)
    assert value(scrape(as_records), "aggregator_rows_rejected_total", pipeline="P", node="n") == 2


# ---- a real `aggregator serve` -------------------------------------------------------------------
def test_served_metrics_count_scheduled_runs_rows_and_lag(serve, tmp_path):
    from tests.service.conftest import wait_for

    folder = tmp_path / "pipelines"
    folder.mkdir()
    (tmp_path / "in.csv").write_text("id,price\n1,2.5\n2,4.0\n3,1.0\n")
    doc = {
        "name": "Tick",
        "sources": [{"name": "prices", "connector_type": "file", "config": {"path": "../in.csv"}}],
        "destinations": [{"name": "db", "connector_type": "duckdb", "config": {"table": "prices"}}],
        "schedule": {"type": "interval", "seconds": 1},
    }
    (folder / "tick.json").write_text(json.dumps(doc))
    service = serve("--pipelines", str(folder))

    def consistent():
        s = scrape_text(service.get("/metrics").text)
        runs = s.get(("aggregator_runs_total", frozenset({("pipeline", "Tick"), ("status", "success")})), 0)
        rows = s.get(("aggregator_rows_out_total", frozenset({("pipeline", "Tick"), ("node", "prices")})), 0)
        lags = s.get(("aggregator_scheduler_lag_seconds_count", frozenset()), 0)
        # every finished run's 3 rows, and no run in flight (the source counts before the run ends)
        return s if runs >= 2 and rows == 3 * runs and lags >= runs else None

    s = wait_for(consistent, timeout=30, what="two scheduled runs, their rows and their lags")
    assert value(s, "aggregator_run_duration_seconds_count", pipeline="Tick") == value(
        s, "aggregator_runs_total", pipeline="Tick", status="success"
    )
    with open(f"/proc/{service.pid}/status") as fh:
        rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    assert value(s, "process_resident_memory_bytes") == pytest.approx(rss_kb * 1024, rel=0.25)
    assert value(s, "process_open_fds") > 0
    assert service.stop() == 0


def scrape_text(body: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out
