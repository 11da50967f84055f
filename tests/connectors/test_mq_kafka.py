"""Kafka (issue 13): there is no Kafka broker here, so the connector is marked untested against a
broker. What can be shown without one: its configs, and an unreachable cluster as a one-line error
from "test connection" and a source that keeps reconnecting with the reason."""

from __future__ import annotations

import threading

import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.errors import ConnectorError, SpecError
from engine.spec.validate import validate
from tests.net import closed_port
from tests.waiting import wait_for

pytest.importorskip("confluent_kafka")


def test_kafka_is_a_source_and_a_destination_and_says_it_is_untested():
    cls = registry.get("kafka")
    assert cls.roles() == ["source", "destination"]
    assert "untested" in cls.title


def test_config_errors_are_one_line_with_the_path():
    doc = {
        "name": "x",
        "nodes": [
            {"id": "s", "kind": "source", "connector_type": "kafka", "config": {"topics": []}},
            {"id": "h", "kind": "destination", "inputs": ["s"], "connector_type": "historian", "config": {}},
        ],
        "schedule": {"type": "real_time"},
    }
    with pytest.raises(SpecError) as err:
        validate(doc)
    line = err.value.one_line()
    assert "\n" not in line and "nodes[0].config.topics" in line


def test_an_unreachable_cluster_is_one_line_and_the_source_keeps_reconnecting():
    port = closed_port()
    cls = registry.get("kafka")
    config = cls.SourceConfig.model_validate(
        {
            "bootstrap_servers": f"127.0.0.1:{port}",
            "topics": ["t"],
            "connect_timeout": 1,
            "reconnect_min_delay": 0.1,
            "reconnect_max_delay": 0.2,
        }
    )
    source = cls.make_source(config, RunContext(), "k")
    with pytest.raises(ConnectorError) as err:
        source.check()
    assert "\n" not in str(err.value) and f"kafka://127.0.0.1:{port}: no answer within 1 s" in str(err.value)

    states: list[tuple[str, str | None]] = []
    source.on_state = lambda _name, state, detail: states.append((state, detail))
    got = threading.Event()
    source.start(lambda frame: got.set())
    try:
        wait_for(
            lambda: any(s == "reconnecting" and d and "no answer" in d for s, d in states),
            what="reconnecting",
        )
    finally:
        source.stop()
    assert not got.is_set()
