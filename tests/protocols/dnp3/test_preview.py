"""`aggregator preview` on a DNP3 source: a short live sample from the opendnp3 outstation through
the engine's one preview path (engine/preview.py), and the reason in one line when the outstation
cannot be reached. (Issue 9 item 6: the engine's preview tests cover Modbus and OPC UA only.)"""

from __future__ import annotations

import json

import pytest

import protocols
from app.cli import main
from protocols.dnp3.simulator import Dnp3Simulator
from tests.net import free_port

from .conftest import T0


@pytest.fixture(autouse=True)
def _protocols():
    protocols.register_all()


def rtu_doc(port: int) -> dict:
    config = {"host": "127.0.0.1", "port": port, "timeout_ms": 1000, "integrity_poll_interval_s": 60}
    return {
        "name": "rtu preview",
        "nodes": [
            {"id": "rtu", "kind": "source", "connector_type": "dnp3", "config": config},
            {
                "id": "analogs",
                "kind": "transform",
                "inputs": ["rtu"],
                "transform": {
                    "type": "record_filter",
                    "condition": {"field": "tag", "operator": "starts_with", "value": "AI."},
                },
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["analogs"],
                "connector_type": "duckdb",
                "config": {"table": "rtu"},
            },
        ],
        "schedule": {"type": "real_time"},
    }


def test_preview_of_a_dnp3_source_is_a_live_sample_from_the_outstation(tmp_path, capsys):
    with Dnp3Simulator(port=0, feeders=1, update_interval_s=None, start_t=T0) as rtu:
        spec = tmp_path / "rtu.json"
        spec.write_text(json.dumps(rtu_doc(rtu.port)))
        code = main(["preview", str(spec), "--data-dir", str(tmp_path / "data"), "--json"])
        raw = {key: value for key, (value, _) in rtu.snapshot().items()}
        per_type = rtu.per_type
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    node = result["nodes"]["rtu"]
    assert node["live_sample"] is True and "no_data" not in node
    rows = node["ports"]["out"]["rows"]
    assert rows and {r["quality"] for r in rows} == {"good"}
    analogs = {r["tag"]: r["value"] for r in result["nodes"]["analogs"]["ports"]["out"]["rows"]}
    assert analogs == {f"AI.{i}": raw["analog_input", i] for i in range(per_type)}  # the graph ran on it


def test_preview_of_an_unreachable_outstation_says_why_in_one_line(tmp_path, capsys):
    port = free_port()
    spec = tmp_path / "dead.json"
    spec.write_text(json.dumps(rtu_doc(port)))
    code = main(["preview", str(spec), "--data-dir", str(tmp_path / "data"), "--node", "rtu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"no data: dnp3://127.0.0.1:{port} (outstation 10): connection refused" in out.out
    assert "Traceback" not in out.err and "Connection refused" not in out.err  # opendnp3's own log
