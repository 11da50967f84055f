"""`aggregator demo --wind-farm`: the streaming demo.

It starts the three simulators in this process (turbines on OPC UA, revenue meters on Modbus, the
substation RTU on DNP3), writes a real-time pipeline that reads all three, runs it for
`--seconds` and prints tag counts, rates, latency and where the data is:

    turbines (opc_ua) ─ quality_check ─┬─ union ─ historian (long table `tags`, live ring buffer)
    meters (modbus) ───────────────────┤
    rtu (dnp3) ────────────────────────┘
    quality_check ─ power_curve ─ duckdb table `turbine_performance` (expected power, deviation)

The pipeline is the graph form the editor opens; `resources/pipelines/wind_farm.json` is the same
pipeline pointed at the simulators' usual ports (`aggregator simulate opcua|modbus|dnp3`).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import EngineAPI


PIPELINE = "wind_farm.json"
TURBINES = 10
METERS = 2
FEEDERS = 4


def wind_farm_spec(
    opcua_endpoint: str, modbus_devices: dict[str, Any], dnp3: tuple[str, int]
) -> dict[str, Any]:
    """The demo pipeline in graph form, for simulators at the given addresses."""
    from protocols import windfarm

    host, port = dnp3
    return {
        "name": "Wind farm to historian",
        "description": "Turbines (OPC UA), revenue meters (Modbus) and the substation RTU (DNP3), "
        "quality-checked into the historian; turbine power against the nominal power curve.",
        "spec_version": 1,
        "nodes": [
            {
                "id": "turbines",
                "kind": "source",
                "connector_type": "opc_ua",
                "config": {
                    "endpoint": opcua_endpoint,
                    "browse_root": "ns=2;s=WindFarm",
                    "publishing_interval_ms": 100,
                    "sampling_interval_ms": 100,
                },
            },
            {"id": "meters", "kind": "source", "connector_type": "modbus", "config": modbus_devices},
            {
                "id": "rtu",
                "kind": "source",
                "connector_type": "dnp3",
                "config": {
                    "host": host,
                    "port": port,
                    "integrity_poll_interval_s": 10,
                    "event_poll_interval_s": 1,
                    "accept_unsolicited": True,
                },
            },
            {
                "id": "quality",
                "kind": "transform",
                "inputs": ["turbines"],
                "transform": {
                    # every turbine value (m/s, kW, rpm, °C) lies in 0..3000: outside it, a sensor fault
                    "type": "quality_check",
                    "min": 0,
                    "max": 3000,
                    "downgrade": "uncertain",
                },
            },
            {
                "id": "all_tags",
                "kind": "transform",
                "inputs": ["quality", "meters", "rtu"],
                "transform": {"type": "union"},
            },
            {
                "id": "historian",
                "kind": "destination",
                "inputs": ["all_tags"],
                "connector_type": "historian",
                "config": {"retention": [{"pattern": "*", "keep": "30d"}]},
            },
            {
                "id": "power_curve",
                "kind": "transform",
                "inputs": ["quality"],
                "transform": {
                    "type": "power_curve",
                    "curve": [list(point) for point in windfarm.POWER_CURVE],
                    "wind_tag": "WindSpeed",
                    "power_tag": "Power",
                },
            },
            {
                "id": "performance",
                "kind": "destination",
                "inputs": ["power_curve"],
                "connector_type": "duckdb",
                "config": {"table": "turbine_performance", "mode": "append"},
            },
        ],
        "layout": {
            "turbines": [0, 0],
            "quality": [240, 0],
            "meters": [240, 140],
            "rtu": [240, 280],
            "all_tags": [480, 140],
            "historian": [720, 140],
            "power_curve": [480, -140],
            "performance": [720, -140],
        },
        "schedule": {
            "type": "real_time",
            "trigger": "data_arrival",
            "max_latency_ms": 250,
            "batch_size": 5000,
        },
    }


def shipped_spec() -> dict[str, Any]:
    """The pipeline as shipped in resources/pipelines: the simulators at their usual ports
    (`aggregator simulate opcua|modbus|dnp3` with no options)."""
    from app.simulate import DEFAULT_PORTS
    from protocols.modbus.simulator import simulator_config

    meters = simulator_config(
        [("127.0.0.1", DEFAULT_PORTS["modbus"], unit) for unit in (1, 2, 3, 4)], poll_interval_ms=500
    )
    return wind_farm_spec(
        f"opc.tcp://127.0.0.1:{DEFAULT_PORTS['opcua']}/windfarm", meters, ("127.0.0.1", DEFAULT_PORTS["dnp3"])
    )


def run_wind_farm_demo(engine: EngineAPI, *, seconds: float, as_json: bool = False) -> dict[str, Any]:
    import logging

    from app.cli import print_json
    from protocols.dnp3.simulator import Dnp3Simulator
    from protocols.modbus.simulator import ModbusSimulator
    from protocols.opcua.simulator import OpcUaSimulator

    logging.getLogger("asyncua").setLevel(logging.ERROR)  # the simulator's security notices, not news here
    folder = engine.data_dir / "demo" / "wind_farm"
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        say = (lambda *a: None) if as_json else print
        say(f"Starting the wind farm: {TURBINES} turbines (OPC UA), {METERS} meters (Modbus), RTU (DNP3)...")
        opcua = OpcUaSimulator(port=0, turbines=TURBINES, tags_per_turbine=4, interval_s=0.1).start()
        stack.callback(opcua.stop)
        modbus = ModbusSimulator(port=0, meters=METERS).start()
        stack.callback(modbus.stop)
        rtu = Dnp3Simulator(port=0, feeders=FEEDERS).start()
        stack.callback(rtu.stop)
        spec = wind_farm_spec(
            opcua.endpoint, modbus.connector_config(poll_interval_ms=500), (rtu.host, rtu.port)
        )
        path = folder / PIPELINE
        path.write_text(json.dumps(spec, indent=2))
        say(f"Running '{spec['name']}' for {seconds:g} s ({path})")
        job = engine.runs.start(spec, spec_path=path, base_dir=folder, trigger="demo", seconds=seconds)
        record = job.result()
    targets = record.pop("_targets", {})
    summary = _summary(engine, record)
    if as_json:
        print_json({**record, "outputs": targets, "summary": summary})
        return record
    _print(engine, record, summary, path)
    return record


def _summary(engine: EngineAPI, record: dict[str, Any]) -> dict[str, Any]:
    if "tags" not in {o["name"] for o in engine.data.objects()}:  # nothing was stored
        by_source, bad = [], 0
    else:
        by_source, bad = _tag_counts(engine)
    stream = record.get("stream", {})
    duration = max(record.get("duration_s") or 0.0, 1e-9)
    return {
        "tags": sum(n for _, n in by_source),
        "tags_by_source": dict(by_source),
        "values_per_s": round((record.get("rows_out") or 0) / duration, 1),
        "not_good_values": bad,
        "latency_ms": stream.get("latency_ms"),
        "dropped": stream.get("rows_dropped", 0),
    }


def _print(engine: EngineAPI, record: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    status = record["status"].upper()
    print(f"\nRun {record['run_id']}: {status} in {record['duration_s']:.1f} s")
    if record.get("error"):
        print(f"  error: {record['error']}")
    print(
        f"  values in {record['rows_in']:,}, stored {record['rows_out']:,} ({summary['values_per_s']:,}/s),"
        f" dropped {summary['dropped']:,}"
    )
    sources = ", ".join(f"{n} from {source}" for source, n in summary["tags_by_source"].items())
    print(f"  tags in the historian: {summary['tags']} ({sources})")
    print(f"  values not good (quality checks, gaps): {summary['not_good_values']:,}")
    latency = summary.get("latency_ms") or {}
    if latency:
        print(
            "  latency value -> historian commit: "
            + ", ".join(f"{k} {latency[k]} ms" for k in ("p50", "p99", "max") if latency.get(k) is not None)
        )
    print("\nWhere the data is:")
    historian = engine.health.status()["historian"]
    print(f"  historian (DuckDB): {historian}  tables 'tags' (long) and 'turbine_performance'")
    print(f"  query it:           aggregator query 'Turbine01.*' --bucket 10s --data-dir {engine.data_dir}")
    print(f"  the pipeline:       {path}")
    print(f"  run history:        aggregator runs --data-dir {engine.data_dir}")


def _tag_counts(engine: EngineAPI) -> tuple[list[tuple[str, int]], int]:
    """(tags by source, values not good) through the read-only SQL console."""
    by_frame = engine.data.sql(
        "SELECT source, count(DISTINCT tag) AS n FROM tags GROUP BY source ORDER BY source"
    )["frame"]
    by_source = list(zip(by_frame["source"].to_list(), by_frame["n"].to_list(), strict=True))
    bad = int(engine.data.sql("SELECT count(*) AS n FROM tags WHERE quality <> 'good'")["frame"]["n"][0])
    return by_source, bad
