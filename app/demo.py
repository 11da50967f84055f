"""`aggregator demo`: the user guide's e-commerce example, end to end, in the data directory."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from engine.runner import run_pipeline
from engine.spec.io import load_pipeline
from engine.workspace import Workspace

PIPELINE = "ecommerce_orders.json"


def install_example(ws: Workspace) -> Path:
    """Copy the sample exports and the graph-form pipeline into <data dir>/demo/ecommerce."""
    target = ws.data_dir / "demo" / "ecommerce"
    target.mkdir(parents=True, exist_ok=True)
    root = resources.files("resources")
    for item in (root / "examples" / "ecommerce").iterdir():
        if item.is_file():
            (target / item.name).write_bytes(item.read_bytes())
    (target / PIPELINE).write_bytes((root / "pipelines" / PIPELINE).read_bytes())
    return target


def run_demo(ws: Workspace, *, as_json: bool = False) -> dict[str, Any]:
    from app.cli import print_json
    from app.commands import print_run

    folder = install_example(ws)
    for stale in ("unified_orders.json", "rejected_orders.json"):
        (folder / stale).unlink(missing_ok=True)
    compiled = load_pipeline(folder / PIPELINE)
    record = run_pipeline(compiled, ws, base_dir=folder, spec_path=str(folder / PIPELINE), trigger="demo")
    targets = record.pop("_targets", {})
    if as_json:
        print_json({**record, "outputs": targets})
        return record
    print(f"Demo: e-commerce order unification ({folder / PIPELINE})")
    print_run(record, targets)
    if record["status"] in ("success", "warning"):
        cur = ws.historian.cursor()
        try:
            rows = cur.execute("SELECT count(*) FROM orders").fetchall()[0][0]
            rejects = cur.execute(
                "SELECT count(*) FROM _rejects WHERE run_id = ?", [record["run_id"]]
            ).fetchall()[0][0]
        finally:
            cur.close()
        print("\nWhere the results are:")
        print(f"  unified orders (JSON):   {folder / 'unified_orders.json'}")
        print(f"  historian table 'orders': {ws.historian.path} ({rows} rows)")
        print(
            f"  rejected records:        {folder / 'rejected_orders.json'}"
            f" and table '_rejects' ({rejects} rows for this run, with reason and node)"
        )
        print(f"  run history:             aggregator runs --data-dir {ws.data_dir}")
        print(f"  open the pipeline:       {folder / PIPELINE}")
    else:
        print(f"error: demo run failed: {record['error']}")
    return record
