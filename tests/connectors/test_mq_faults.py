"""Message queue sources when the broker goes away (issue 13): through a TCP fault proxy
(tests/faultproxy.py) in front of the real broker, a broken link turns the session `lost`, then
`reconnecting` (with the reason) while the port refuses, and back to `subscribed` when it answers;
what was published meanwhile (acking brokers) is committed once, with nothing lost. Also: an
unreachable broker at start, "test connection", and config errors as one line with the path."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.errors import ConnectorError, SpecError
from engine.runner import _context
from engine.spec.validate import validate
from engine.streaming import StreamRunner
from engine.workspace import Workspace
from tests.connectors.mq_brokers import ACKING, ALL, Broker, tag_bodies
from tests.faultproxy import FaultProxy
from tests.net import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.services


def runner_for(ws, tmp_path, broker: Broker, port: int) -> tuple[StreamRunner, list[tuple[str, str | None]]]:
    doc = {
        "name": "mq",
        "nodes": [
            {
                "id": "src",
                "kind": "source",
                "connector_type": broker.connector_type,
                "config": broker.source_config(port=port),
            },
            {
                "id": "hist",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "historian",
                "config": {},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 1000, "max_latency_ms": 50},
    }
    compiled = validate(doc)
    ctx = _context(compiled, ws, "run1", datetime.now(UTC), tmp_path, threading.Event(), dry_run=False)
    runner = StreamRunner(compiled, ctx)
    states: list[tuple[str, str | None]] = []
    on_state = runner._on_state

    def record(name: str, state: str, detail: str | None) -> None:
        states.append((state, detail))
        on_state(name, state, detail)

    runner._on_state = record  # type: ignore[method-assign]
    return runner, states


@pytest.mark.parametrize("kind", ALL)
def test_a_broken_link_is_lost_then_reconnecting_then_back_and_nothing_is_lost(kind, tmp_path):
    broker = Broker(kind)
    upstream_port = {"rabbitmq": 5672, "redis_streams": 6379}.get(kind, 4222)
    try:
        broker.declare()
        with FaultProxy("127.0.0.1", upstream_port) as proxy, Workspace(tmp_path / "data") as ws:
            runner, states = runner_for(ws, tmp_path, broker, proxy.port)
            runner.start()
            try:
                source = runner.sources["src"]
                wait_for(lambda: source.state == "subscribed", what="subscribed")
                broker.publish(tag_bodies(50))
                wait_for(lambda: runner.stats()["rows_committed"] == 50, what="the first 50 rows")
                if kind in ACKING:
                    wait_for(lambda: source.counters["acked"] == 50, what="the first 50 acks")
                proxy.refuse()
                proxy.reset_all()
                wait_for(lambda: "lost" in [s for s, _ in states], what="session lost")
                wait_for(
                    lambda: any(s == "reconnecting" and d and "refused" in d for s, d in states),
                    what="reconnecting: connection refused",
                )
                if kind in ACKING:  # kept by the broker while the link is down
                    broker.publish(tag_bodies(50, start=50))
                proxy.pass_through()
                wait_for(lambda: source.state == "subscribed", what="subscribed again")
                if kind == "nats_core":  # core NATS keeps nothing for an absent subscriber
                    broker.publish(tag_bodies(50, start=50))
                wait_for(lambda: runner.stats()["rows_committed"] >= 100, timeout=30, what="100 rows")
                assert source.counters["reconnects"] >= 1
            finally:
                runner.stop()
            values = [
                r[0] for r in ws.historian.cursor().sql("SELECT value FROM tags ORDER BY value").fetchall()
            ]
            assert values == [float(i) for i in range(100)]  # each once: none lost, none twice
    finally:
        broker.cleanup()


@pytest.mark.parametrize("kind", ALL)
def test_an_unreachable_broker_keeps_reconnecting_and_test_connection_says_why(kind, tmp_path):
    broker = Broker(kind)
    port = free_port()
    cls = registry.get(broker.connector_type)
    config = cls.SourceConfig.model_validate(broker.source_config(port=port))
    source = cls.make_source(config, RunContext(), "src")
    with pytest.raises(ConnectorError) as err:
        source.check()
    line = str(err.value)
    assert "\n" not in line and "connection refused" in line and str(port) in line

    with Workspace(tmp_path / "data") as ws:
        runner, states = runner_for(ws, tmp_path, broker, port)
        runner.start()
        try:
            wait_for(
                lambda: any(s == "reconnecting" and d and "connection refused" in d for s, d in states),
                what="reconnecting: connection refused",
            )
            assert runner.running  # a broker that is down is waited for, not a failed run
        finally:
            runner.stop()
        assert runner.link_problems() and "never connected" in runner.link_problems()[0]
    broker.cleanup()


@pytest.mark.parametrize(
    ("connector_type", "config", "expected"),
    [
        ("rabbitmq", {}, "nodes[0].config: give a queue to consume, or an exchange"),
        ("amqp", {"queue": "q", "prefetch": 0}, "nodes[0].config.prefetch:"),
        ("redis_streams", {"stream": "s", "start_id": "5"}, "nodes[0].config.start_id: '5' is not allowed"),
        ("redis_streams", {}, "nodes[0].config.stream:"),
        ("nats", {"subject": "a.>.b"}, "nodes[0].config: subject 'a.>.b': dot-separated tokens"),
        ("nats", {"subject": "a", "durable": "x"}, "durable and stream are for JetStream"),
        (
            "rabbitmq",
            {"queue": "q", "reconnect_min_delay": 5, "reconnect_max_delay": 1},
            "reconnect_max_delay",
        ),
    ],
)
def test_config_errors_are_one_line_with_the_path(connector_type, config, expected):
    doc = {
        "name": "x",
        "nodes": [
            {"id": "s", "kind": "source", "connector_type": connector_type, "config": config},
            {"id": "h", "kind": "destination", "inputs": ["s"], "connector_type": "historian", "config": {}},
        ],
        "schedule": {"type": "real_time"},
    }
    with pytest.raises(SpecError) as err:
        validate(doc)
    line = err.value.one_line()
    assert "\n" not in line and expected in line
