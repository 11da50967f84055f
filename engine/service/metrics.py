"""Prometheus metrics of the engine (`GET /metrics`), fed by the engine's events.

`EngineMetrics(registry)` registers the metrics below on `registry` and is an event subscriber:
`engine.subscribe(metrics.observe)` (or `metrics.attach(engine)`). `render(registry)` gives the
exposition text and its content type for the HTTP route. The service calls
`observe_scheduler_lag(seconds)` each time a schedule fires.

| metric | type | labels | from |
|---|---|---|---|
| `aggregator_rows_in_total` / `_rows_out_total` / `_rows_rejected_total` | counter | pipeline, node | `node_progress`, `stream_stats` (cumulative per run; the increase is counted) |
| `aggregator_runs_total` | counter | pipeline, status | `run_finished` |
| `aggregator_run_duration_seconds` | histogram | pipeline | `run_started` -> `run_finished` (or its `duration_s`) |
| `aggregator_retries_total` | counter | pipeline, node | `retrying` (node `""`: the whole batch run), `sink_retry` |
| `aggregator_source_state` | gauge (1 = the source's state now) | pipeline, source, state | `source_state` |
| `aggregator_source_reconnects_total` | counter | pipeline, source | `source_state`: up again after lost/reconnecting/failed |
| `aggregator_queue_rows` / `aggregator_queue_bytes` | gauge | pipeline, source | `stream_stats` |
| `aggregator_rows_dropped_total` | counter | pipeline, node | `alarm` of kind `rows_dropped` |
| `aggregator_micro_batches_total` | counter | pipeline | `micro_batch` |
| `aggregator_micro_batch_latency_seconds` | histogram | pipeline | `micro_batch` (receipt of its oldest row -> commit) |
| `aggregator_scheduler_lag_seconds` | histogram | | `observe_scheduler_lag` |
| `aggregator_outbox_pending_records` / `_pending_bytes` / `_oldest_pending_age_s` | gauge | pipeline, destination | the outbox status (engine/api/outbox.py), read at scrape |
| `aggregator_outbox_appended_records_total` / `_forwarded_` / `_dropped_` / `_quarantined_records_total`, `aggregator_outbox_corrupt_set_aside_total` | counter | pipeline, destination | the outbox's durable counters |
| `aggregator_outbox_link_state` | gauge (1 = the state now) | pipeline, destination, state | the forwarder's link |
| `aggregator_alerts_active` | gauge | severity | open alerts (engine/api/alerts.py), read at scrape |
| `aggregator_alert_notifications_total` | counter | channel, result (delivered, failed) | the alert notifier's figures (this process) |
| `aggregator_alert_notifications_pending` | gauge | | notifications waiting in the alert outboxes |
| `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`... | | | prometheus_client's ProcessCollector (Linux /proc) |

The mapping from events to metrics is one method, `observe`: events arrive as typed records
(engine/api/events.py) or as the dicts of their wire form; `as_dict` (engine/service/logs.py)
makes them one shape.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from engine.service.logs import as_dict

RUN_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENCY_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 60)
UP_STATES = ("connected", "subscribed")
DOWN_STATES = ("lost", "reconnecting", "failed")
COUNTS = ("rows_in", "rows_out", "rows_rejected")
REMEMBERED_RUNS = 256  # runs whose pipeline and counts are kept after they end (late events)


@dataclass
class _Run:
    pipeline: str
    started: float | None  # monotonic; None for a run whose start this did not see
    seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # node -> counts so far


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rows = {
            name: Counter(
                f"aggregator_{name}",
                f"Rows {name[5:]} per pipeline and node",
                ["pipeline", "node"],
                registry=r,
            )
            for name in COUNTS
        }
        self.runs = Counter("aggregator_runs", "Finished runs by status", ["pipeline", "status"], registry=r)
        self.run_duration = Histogram(
            "aggregator_run_duration_seconds", "Run duration", ["pipeline"], buckets=RUN_SECONDS, registry=r
        )
        self.retries = Counter(
            "aggregator_retries", "Retries of failed attempts and commits", ["pipeline", "node"], registry=r
        )
        self.source_state = Gauge(
            "aggregator_source_state",
            "A streaming source's session state (1 = its state now)",
            ["pipeline", "source", "state"],
            registry=r,
        )
        self.reconnects = Counter(
            "aggregator_source_reconnects",
            "Sessions back up after being lost",
            ["pipeline", "source"],
            registry=r,
        )
        self.queue_rows = Gauge(
            "aggregator_queue_rows", "Rows waiting in a source's queue", ["pipeline", "source"], registry=r
        )
        self.queue_bytes = Gauge(
            "aggregator_queue_bytes", "Bytes waiting in a source's queue", ["pipeline", "source"], registry=r
        )
        self.dropped = Counter(
            "aggregator_rows_dropped",
            "Rows dropped (full queue, commit given up)",
            ["pipeline", "node"],
            registry=r,
        )
        self.micro_batches = Counter(
            "aggregator_micro_batches", "Micro-batches committed", ["pipeline"], registry=r
        )
        self.batch_latency = Histogram(
            "aggregator_micro_batch_latency_seconds",
            "Receipt of a micro-batch's oldest row to its commit",
            ["pipeline"],
            buckets=LATENCY_SECONDS,
            registry=r,
        )
        self.scheduler_lag = Histogram(
            "aggregator_scheduler_lag_seconds",
            "How late a scheduled run started",
            buckets=LAG_SECONDS,
            registry=r,
        )
        if process:
            ProcessCollector(registry=r)  # process_resident_memory_bytes, _cpu_seconds_total, _open_fds
        self._lock = threading.Lock()
        # Runs are remembered past their end: a run's final node_progress events come after its
        # run_finished (engine/api/runs.py), and must neither lose the pipeline nor count twice.
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._states: dict[tuple[str, str], str] = {}  # (pipeline, source) -> state now
        self._was_down: set[tuple[str, str]] = set()

    def attach(self, engine: Any) -> Callable[[], None]:
        """Subscribe to `engine` (anything with `subscribe(callback)`); returns the unsubscribe.
        An engine with outboxes (`engine.outbox.status()`) has their figures collected too."""
        outbox = getattr(engine, "outbox", None)
        if outbox is not None:
            self.attach_outbox(outbox.status)
        alerts = getattr(engine, "alerts", None)
        if alerts is not None:
            self.attach_alerts(alerts)
        return engine.subscribe(self.observe)

    def attach_alerts(self, alerts: Any) -> None:
        """Collect the alert figures (`alerts.counts()`, `alerts.notifications()`) once."""
        if getattr(self, "_alerts_collector", None) is None:
            self._alerts_collector = AlertsCollector(alerts)
            self.registry.register(self._alerts_collector)

    def attach_outbox(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        """Collect the outbox figures (`status()` per destination) on this registry, once."""
        if getattr(self, "_outbox_collector", None) is None:
            self._outbox_collector = OutboxCollector(status)
            self.registry.register(self._outbox_collector)

    def observe_scheduler_lag(self, seconds: float) -> None:
        self.scheduler_lag.observe(max(0.0, float(seconds)))

    def observe(self, event: Any) -> None:
        """The one mapping from engine events to metrics."""
        e = as_dict(event)
        kind = e.get("event")
        run_id = e.get("run_id") or ""
        with self._lock:
            if kind == "run_started":
                self._remember(run_id, _Run(e.get("pipeline") or "", time.monotonic()))
                return
            run = self._runs.get(run_id) or self._remember(run_id, _Run(e.get("pipeline") or "", None))
            pipeline = e.get("pipeline") or run.pipeline
            if kind == "node_progress" and e.get("node"):
                self._count(run, pipeline, e["node"], e)
            elif kind == "stream_stats":
                for node, stats in (e.get("nodes") or {}).items():
                    self._count(run, pipeline, node, stats)
                for source, stats in (e.get("sources") or {}).items():
                    self.queue_rows.labels(pipeline, source).set(stats.get("queued_rows") or 0)
                    self.queue_bytes.labels(pipeline, source).set(stats.get("queued_bytes") or 0)
            elif kind == "micro_batch":
                self.micro_batches.labels(pipeline).inc()
                if e.get("batch_latency_ms") is not None:
                    self.batch_latency.labels(pipeline).observe(max(0.0, e["batch_latency_ms"] / 1000.0))
            elif kind == "alarm" and e.get("kind") == "rows_dropped":
                self.dropped.labels(pipeline, e.get("node") or "").inc(e.get("rows") or 0)
            elif kind in ("retrying", "sink_retry"):
                self.retries.labels(pipeline, e.get("node") or "").inc()
            elif kind == "source_state" and e.get("node"):
                self._state(pipeline, e["node"], e.get("state") or "")
            elif kind == "run_finished":
                self.runs.labels(pipeline, e.get("status") or "").inc()
                seconds = e.get("duration_s")
                if seconds is None and run.started is not None:
                    seconds = time.monotonic() - run.started
                if seconds is not None:
                    self.run_duration.labels(pipeline).observe(seconds)

    def _remember(self, run_id: str, run: _Run) -> _Run:
        self._runs[run_id] = run
        while len(self._runs) > REMEMBERED_RUNS:
            self._runs.popitem(last=False)
        return run

    def _count(self, run: _Run, pipeline: str, node: str, stats: Mapping[str, Any]) -> None:
        """Counts in events are so far in the run: count what was added since the highest count seen.
        Counts never go back: a stream's stats snapshot that arrives after a newer progress event
        adds nothing, and a retried run's new attempt counts only rows beyond the last attempt's."""
        before = run.seen.get(node, (0, 0, 0))
        now = tuple(max(int(stats.get(name) or 0), old) for name, old in zip(COUNTS, before, strict=True))
        for name, new, old in zip(COUNTS, now, before, strict=True):
            child = self.rows[name].labels(pipeline, node)  # shown from the first event, at 0 too
            if new > old:
                child.inc(new - old)
        run.seen[node] = now  # type: ignore[assignment]

    def _state(self, pipeline: str, source: str, state: str) -> None:
        key = (pipeline, source)
        previous = self._states.get(key)
        if previous is not None and previous != state:
            self.source_state.labels(pipeline, source, previous).set(0)
        self.source_state.labels(pipeline, source, state).set(1)
        self._states[key] = state
        if state in DOWN_STATES:
            self._was_down.add(key)
        elif state in UP_STATES and key in self._was_down:
            self._was_down.discard(key)
            self.reconnects.labels(pipeline, source).inc()


OUTBOX_GAUGES = {
    "pending_records": "Records in the outbox not yet delivered",
    "pending_bytes": "Bytes in the outbox not yet delivered",
    "oldest_pending_age_s": "Age of the oldest undelivered record (seconds; 0 when none)",
}
OUTBOX_COUNTERS = {
    "appended_records": "Records the outbox accepted, ever (survives restarts)",
    "forwarded_records": "Records delivered to the upstream",
    "dropped_records": "Records dropped at the outbox's cap (written as gap records)",
    "quarantined_records": "Records the upstream refused, set aside in quarantine",
    "corrupt_set_aside": "Corrupt outbox files set aside and replaced",
}
LINK_STATES = ("idle", "connecting", "up", "down", "stopped")


class OutboxCollector:
    """`aggregator_outbox_*{pipeline, destination}`: the outbox figures (engine/api/outbox.py
    `status()`), read when /metrics is scraped: gauges for what waits, counters for what the
    outbox counts durably, and `aggregator_outbox_link_state` (1 = the state now)."""

    def __init__(self, status: Callable[[], list[dict[str, Any]]]):
        self._status = status

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            rows = self._status()
        except Exception:
            rows = []
        labels = ["pipeline", "destination"]
        gauges = {
            k: GaugeMetricFamily(f"aggregator_outbox_{k}", h, labels=labels) for k, h in OUTBOX_GAUGES.items()
        }
        counters = {
            k: CounterMetricFamily(f"aggregator_outbox_{k}", h, labels=labels)
            for k, h in OUTBOX_COUNTERS.items()
        }
        link = GaugeMetricFamily(
            "aggregator_outbox_link_state",
            "The forwarder's link (1 = its state now)",
            labels=[*labels, "state"],
        )
        for row in rows:
            key = [str(row.get("pipeline")), str(row.get("destination"))]
            for k, g in gauges.items():
                g.add_metric(key, float(row.get(k) or 0))
            for k, c in counters.items():
                c.add_metric(key, float(row.get(k) or 0))
            for state in LINK_STATES:
                link.add_metric([*key, state], 1.0 if row.get("link_state") == state else 0.0)
        yield from gauges.values()
        yield from counters.values()
        yield link


class AlertsCollector:
    """`aggregator_alerts_active{severity}` (open alerts: active or acknowledged) and
    `aggregator_alert_notifications_total{channel, result}` (delivered notifications, failed
    delivery attempts; this process), read when /metrics is scraped (engine/api/alerts.py)."""

    def __init__(self, alerts: Any):
        self._alerts = alerts

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            counts, sent = self._alerts.counts(), self._alerts.notifications()
        except Exception:
            counts, sent = {}, {}
        active = GaugeMetricFamily("aggregator_alerts_active", "Open alerts by severity", labels=["severity"])
        for severity in ("info", "warning", "critical"):
            active.add_metric([severity], float(counts.get(severity) or 0))
        notes = CounterMetricFamily(
            "aggregator_alert_notifications",
            "Alert notifications delivered, and failed delivery attempts, per channel",
            labels=["channel", "result"],
        )
        for channel in ("email", "webhook"):
            for result in ("delivered", "failed"):
                notes.add_metric([channel, result], float(sent.get(f"{channel}_{result}") or 0))
        pending = GaugeMetricFamily(
            "aggregator_alert_notifications_pending", "Alert notifications waiting in the outboxes"
        )
        pending.add_metric([], float(sent.get("pending") or 0))
        yield active
        yield notes
        yield pending


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text of `registry` and its content type, for `GET /metrics`."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
