from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.connectors import registry
from protocols.opcua.client import status_quality
from protocols.opcua.config import OpcUaConfig

ENDPOINT = "opc.tcp://127.0.0.1:4840"


def test_defaults_and_nested_models():
    cfg = OpcUaConfig(
        endpoint=ENDPOINT, nodes=["ns=2;s=Turbine01.Power"], deadband={"type": "absolute", "value": 2}
    )
    assert cfg.mode == "subscribe" and cfg.security_policy == "None" and cfg.tag_name == "browse_name"
    assert cfg.deadband.value == 2.0 and cfg.max_nodes_per_read is None
    assert cfg.reconnect.initial_delay_s < cfg.reconnect.max_delay_s


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"nodez": ["x"]}, "Extra inputs are not permitted"),
        ({"endpoint": "http://host:4840"}, "opc.tcp://"),
        ({"security_policy": "Basic256Sha256"}, "go together"),
        ({"security_policy": "Basic256Sha256", "security_mode": "Sign"}, "needs `certificate`"),
        ({"security_policy": "Basic128Rsa15", "security_mode": "Sign"}, "Basic256Sha256"),
        ({"deadband": {"type": "percent", "value": 150}}, "between 0 and 100"),
        ({"deadband": {"type": "absolute", "value": 1, "extra": 1}}, "Extra inputs"),
        ({"password": "x", "allow_insecure_password": True}, "needs a username"),
        ({"username": "op", "password": "x"}, "would cross the network in clear text"),
        ({"mode": "stream"}, "subscribe"),
    ],
)
def test_invalid_configs_name_the_problem(extra, message):
    with pytest.raises(ValidationError, match=message):
        OpcUaConfig.model_validate({"endpoint": ENDPOINT, "nodes": ["ns=2;i=1"], **extra})


def test_a_password_on_a_none_channel_is_refused_at_its_json_path():
    """Sent in clear text unless asked for; the spec validator names nodes[i].config.password."""
    import protocols.opcua.connector  # noqa: F401  (registers opc_ua)
    from engine.errors import SpecError
    from engine.spec.validate import validate

    source = {
        "endpoint": ENDPOINT,
        "browse_root": "WindFarm",
        "username": "operator",
        "password": {"secret": "plc"},
    }
    doc = {
        "name": "plant",
        "spec_version": 1,
        "schedule": {"type": "real_time", "max_latency_ms": 250, "batch_size": 5000},
        "nodes": [
            {"id": "turbines", "kind": "source", "connector_type": "opc_ua", "config": source},
            {
                "id": "historian",
                "kind": "destination",
                "inputs": ["turbines"],
                "connector_type": "historian",
                "config": {},
            },
        ],
    }
    with pytest.raises(SpecError) as err:
        validate(doc)
    issues = [(i.path, i.message) for i in err.value.issues]
    assert len(issues) == 1 and issues[0][0] == "nodes[0].config.password"
    assert "clear text" in issues[0][1] and "allow_insecure_password: true" in issues[0][1]
    assert "\n" not in str(err.value)
    doc["nodes"][0]["config"]["allow_insecure_password"] = True
    validate(doc)
    secure = OpcUaConfig(
        endpoint=ENDPOINT,
        nodes=["i=1"],
        security_policy="Basic256Sha256",
        security_mode="Sign",
        certificate="c.pem",
        private_key="k.pem",
        username="operator",
        password="pw",
    )
    assert secure.password == "pw" and not secure.allow_insecure_password


def test_nodes_or_browse_root_required():
    with pytest.raises(ValidationError, match="browse_root"):
        OpcUaConfig(endpoint=ENDPOINT)


def test_registered_as_opc_ua():
    connector = registry.get("OPC UA")
    assert connector is not None and connector.connector_type == "opc_ua"
    assert connector.describe()["source_schema"]["properties"]["endpoint"]


@settings(deadline=None)  # the first call imports asyncua's status table
@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_quality_follows_the_severity_bits(code):
    quality, reason = status_quality(code)
    expected = {0: "good", 1: "uncertain"}.get(code >> 30, "bad")
    assert quality == expected
    assert (reason is None) == (quality == "good")
    if reason is not None:
        assert reason.lower().startswith(quality)


def test_known_status_names_are_the_reason():
    assert status_quality(0x80310000) == ("bad", "BadNoCommunication")
    assert status_quality(0x80310400) == ("bad", "BadNoCommunication")  # info bits set
    assert status_quality(0x80FF0000) == ("bad", "Bad_0x80FF0000")  # not a known code
    assert status_quality(0x40900000) == ("uncertain", "UncertainLastUsableValue")
    assert status_quality(0x00A20000) == ("good", None)  # GoodClamped is still good


def _golden_rows():
    import csv
    from pathlib import Path

    with open(Path(__file__).parent / "golden" / "status_codes.csv", newline="") as f:
        return [(row["code"], row["quality"], row["reason"] or None) for row in csv.DictReader(f)]


@pytest.mark.parametrize(("code", "quality", "reason"), _golden_rows())
def test_golden_status_codes(code, quality, reason):
    """Cases live in golden/status_codes.csv: a new one is a line, not code."""
    assert status_quality(int(code, 16)) == (quality, reason)
