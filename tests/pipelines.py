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
