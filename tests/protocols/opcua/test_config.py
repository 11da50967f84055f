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
        ({"password": "x"}, "needs a username"),
        ({"mode": "stream"}, "subscribe"),
    ],
)
def test_invalid_configs_name_the_problem(extra, message):
    with pytest.raises(ValidationError, match=message):
        OpcUaConfig.model_validate({"endpoint": ENDPOINT, "nodes": ["ns=2;i=1"], **extra})


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
