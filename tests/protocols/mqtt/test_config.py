"""MQTT source configuration: the password rule (the same as OPC UA's for a None channel)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import protocols.mqtt.connector  # noqa: F401  (registers mqtt and sparkplug_b)
from engine.errors import SpecError
from engine.spec.validate import validate
from protocols.mqtt.config import MqttSourceConfig, SparkplugSourceConfig


def plant(connector: str, source: dict) -> dict:
    return {
        "name": "plant",
        "spec_version": 1,
        "schedule": {"type": "real_time", "max_latency_ms": 250, "batch_size": 5000},
        "nodes": [
            {"id": "broker", "kind": "source", "connector_type": connector, "config": source},
            {
                "id": "historian",
                "kind": "destination",
                "inputs": ["broker"],
                "connector_type": "historian",
                "config": {},
            },
        ],
    }


@pytest.mark.parametrize("connector", ["mqtt", "sparkplug_b"])
def test_a_password_without_tls_is_refused_at_its_json_path(connector):
    source = {"topics": ["plant/#"], "username": "edge", "password": {"secret": "broker"}}
    doc = plant(connector, source)
    with pytest.raises(SpecError) as err:
        validate(doc)
    issues = [(i.path, i.message) for i in err.value.issues]
    assert len(issues) == 1 and issues[0][0] == "nodes[0].config.password"
    assert "clear text" in issues[0][1] and "allow_insecure_password: true" in issues[0][1]
    assert "\n" not in str(err.value)

    doc["nodes"][0]["config"]["allow_insecure_password"] = True  # asked for: accepted
    validate(doc)
    doc["nodes"][0]["config"] = {**source, "tls": {"ca_file": "ca.pem"}}  # over TLS: accepted
    validate(doc)


def test_no_password_needs_no_tls_and_a_bad_tls_is_the_error_shown():
    assert MqttSourceConfig(topics=["a/#"], username="edge").password is None  # a user name alone
    assert SparkplugSourceConfig().topics == ["spBv1.0/#"]
    with pytest.raises(ValidationError) as err:
        MqttSourceConfig.model_validate({"topics": ["a/#"], "password": "pw", "tls": {"verify": "maybe"}})
    assert [e["loc"] for e in err.value.errors()] == [("tls", "verify")]
