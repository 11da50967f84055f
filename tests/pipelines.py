"""Pipelines the tests share: the e-commerce demo copied into a folder of its own, a small CSV
into DuckDB, and an endless test_ticks stream into DuckDB (TicksConnector must be registered)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
ECOMMERCE_SPEC = "ecommerce_orders.json"


def ecommerce_folder(tmp_path: Path) -> Path:
    """The e-commerce demo (pipeline and its two exports) in `tmp_path/ecommerce`."""
    target = tmp_path / "ecommerce"
    shutil.copytree(RESOURCES / "examples" / "ecommerce", target)
    shutil.copy(RESOURCES / "pipelines" / ECOMMERCE_SPEC, target)
    return target


def csv_into_duckdb(folder: Path, rows: int, *, name: str, table: str) -> dict[str, Any]:
    """A CSV of `rows` rows (column `a`) written to `folder`, and a graph that loads it into `table`."""
    source = folder / "in.csv"
    pl.DataFrame({"a": range(rows)}).write_csv(source)
    return {
        "name": name,
        "spec_version": 1,
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "file", "config": {"path": str(source)}},
            {
                "id": "dst",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "duckdb",
                "config": {"table": table},
            },
        ],
    }


def ticks_stream(name: str, *, rows_per_batch: int, interval_s: float) -> dict[str, Any]:
    """A real_time graph: an endless test_ticks source into the DuckDB table `ticks`."""
    return {
        "name": name,
        "nodes": [
            {
                "id": "ticks",
                "kind": "source",
                "connector_type": "test_ticks",
                "config": {"rows_per_batch": rows_per_batch, "batches": None, "interval_s": interval_s},
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["ticks"],
                "connector_type": "duckdb",
                "config": {"table": "ticks"},
            },
        ],
        "schedule": {"type": "real_time"},
    }


def opcua_stream(
    sim,
    *,
    name: str,
    source_id: str = "plc",
    max_latency_ms: int = 300,
    layout: dict[str, list[float]] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """A real_time graph: every node of an OPC UA simulator (`sim.endpoint`, `sim.node_ids()`),
    subscribed at 100 ms, into the tag historian. `config` adds to the source's config."""
    doc: dict[str, Any] = {
        "name": name,
        "spec_version": 1,
        "nodes": [
            {
                "id": source_id,
                "kind": "source",
                "connector_type": "opc_ua",
                "config": {
                    "endpoint": sim.endpoint,
                    "nodes": sim.node_ids(),
                    "publishing_interval_ms": 100,
                    "sampling_interval_ms": 100,
                    **config,
                },
            },
            {"id": "historian", "kind": "destination", "inputs": [source_id], "connector_type": "historian"},
        ],
        "schedule": {"type": "real_time", "max_latency_ms": max_latency_ms},
    }
    if layout is not None:
        doc["layout"] = layout
    return doc


def one_modbus_tag(port: int) -> dict[str, Any]:
    """A real_time graph: one float32 holding register of a Modbus simulator on `port`, polled every
    second, into the tag historian (the idle one-tag pipeline of issue 12 item 4)."""
    return {
        "name": "one modbus tag",
        "spec_version": 1,
        "nodes": [
            {
                "id": "meter",
                "kind": "source",
                "connector_type": "modbus",
                "config": {
                    "devices": [
                        {
                            "name": "meter1",
                            "host": "127.0.0.1",
                            "port": port,
                            "unit_id": 1,
                            "poll_interval_ms": 1000,
                            "tags": [
                                {"name": "power_kw", "table": "holding", "address": 0, "type": "float32"}
                            ],
                        }
                    ]
                },
            },
            {
                "id": "historian",
                "kind": "destination",
                "inputs": ["meter"],
                "connector_type": "historian",
                "config": {},
            },
        ],
        "schedule": {"type": "real_time"},
    }


def historian_rows(data: Path) -> int:
    """Rows in a running pipeline's historian (`data/historian.duckdb`), read from a copy of the file
    and its WAL so that the writer is not disturbed; 0 while there is none or the copy was taken
    mid-write (callers poll)."""
    import duckdb

    source = data / "historian.duckdb"
    if not source.exists():
        return 0
    copy = data.parent / "historian-copy.duckdb"
    wal, copy_wal = Path(f"{source}.wal"), Path(f"{copy}.wal")
    try:
        shutil.copyfile(source, copy)
        if wal.exists():
            shutil.copyfile(wal, copy_wal)
        con = duckdb.connect(str(copy), read_only=True)
        try:
            tables = {
                r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            }
            return con.execute("SELECT count(*) FROM tags").fetchone()[0] if "tags" in tables else 0
        finally:
            con.close()
    except (OSError, duckdb.Error):
        return 0
    finally:
        copy.unlink(missing_ok=True)
        copy_wal.unlink(missing_ok=True)
