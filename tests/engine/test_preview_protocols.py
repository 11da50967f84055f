"""`aggregator preview` on protocol sources: a short live sample from the real simulators, through
the engine's one preview path (engine/preview.py), the one the GUI's preview takes too.

Before, every protocol source failed with "'ModbusSource' object has no attribute 'read'"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import protocols
from app.cli import main
from engine.api import LocalEngine
from protocols.modbus.simulator import ModbusSimulator, simulator_config
from protocols.opcua.simulator import OpcUaSimulator
from tests.net import closed_port
from tests.pipelines import opcua_stream


@pytest.fixture(autouse=True)
def _protocols():
    protocols.register_all()


def modbus_doc(port: int, *, poll_interval_ms: int = 200) -> dict:
    return {
        "name": "meters preview",
        "nodes": [
            {
                "id": "meters",
                "kind": "source",
                "connector_type": "modbus",
                "config": simulator_config([("127.0.0.1", port, 1)], poll_interval_ms=poll_interval_ms),
            },
            {
                "id": "good",
                "kind": "transform",
                "inputs": ["meters"],
                "transform": {
                    "type": "record_filter",
                    "condition": {"field": "quality", "operator": "equals", "value": "good"},
                },
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["good"],
                "connector_type": "duckdb",
                "config": {"table": "meters"},
            },
        ],
        "schedule": {"type": "real_time"},
    }


def preview_json(capsys, spec: Path, data_dir: Path, *extra: str) -> dict:
    code = main(["preview", str(spec), "--data-dir", str(data_dir), "--json", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_preview_of_a_modbus_source_is_a_live_sample_from_the_simulator(tmp_path, capsys):
    with ModbusSimulator(meters=1, frozen_at=1000.0) as sim:
        spec = tmp_path / "meters.json"
        spec.write_text(json.dumps(modbus_doc(sim.port)))
        result = preview_json(capsys, spec, tmp_path / "data", "--limit", "5")
    meters = result["nodes"]["meters"]
    assert meters["live_sample"] is True and "no_data" not in meters
    rows = meters["ports"]["out"]["rows"]
    assert len(rows) == 5 and {r["quality"] for r in rows} == {"good"}
    assert all(r["tag"].startswith("meter1.") and r["value"] is not None for r in rows)
    assert len(result["nodes"]["good"]["ports"]["out"]["rows"]) == 5  # the graph ran on the sample
    assert not (tmp_path / "data" / "historian.duckdb").exists() or "meters" not in _tables(tmp_path)


def _tables(tmp_path: Path) -> set[str]:
    import duckdb

    con = duckdb.connect(str(tmp_path / "data" / "historian.duckdb"), read_only=True)
    try:
        return {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def test_preview_of_an_opc_ua_source_is_a_live_sample_from_the_simulator(tmp_path, capsys):
    sim = OpcUaSimulator(turbines=1, tags_per_turbine=3, interval_s=0.1).start()
    try:
        spec = tmp_path / "plc.json"
        spec.write_text(json.dumps(opcua_stream(sim, name="plc preview")))
        result = preview_json(capsys, spec, tmp_path / "data", "--node", "plc")
        wanted = {node_id.split(";s=", 1)[1] for node_id in sim.node_ids()}
    finally:
        sim.stop()
    plc = result["nodes"]["plc"]
    assert plc["live_sample"] is True and "no_data" not in plc
    rows = plc["ports"]["out"]["rows"]
    assert {r["tag"] for r in rows} == wanted and {r["quality"] for r in rows} == {"good"}


def test_preview_of_an_unreachable_modbus_device_says_why_in_one_line(tmp_path, capsys):
    port = closed_port()
    spec = tmp_path / "dead.json"
    spec.write_text(json.dumps(modbus_doc(port)))
    code = main(["preview", str(spec), "--data-dir", str(tmp_path / "data"), "--node", "meters"])
    out = capsys.readouterr()
    assert code == 0
    assert f"no data: modbus://127.0.0.1:{port}: connection refused" in out.out
    assert "Repeating" not in out.err and "Failed to connect" not in out.err


def test_the_engine_api_preview_takes_the_same_path_and_gives_the_reason(tmp_path):
    port = closed_port()
    engine = LocalEngine(tmp_path / "data")
    try:
        result = engine.runs.preview(modbus_doc(port), "meters", limit=10).result(30)
    finally:
        engine.close()
    assert result.live_sampled == ["meters"]
    assert result.live_problems["meters"].startswith(f"modbus://127.0.0.1:{port}: connection refused")
    # the device's tags came as bad records with the reason, not as nothing
    rows = result.output("meters").rows
    assert rows.height >= 1 and set(rows["quality"]) == {"bad"} and set(rows["reason"]) == {"comm_lost"}
