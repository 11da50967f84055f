"""`aggregator demo`: the user guide's e-commerce example, end to end, in the data directory."""

from __future__ import annotations

from typing import Any

from engine.examples import ECOMMERCE_SPEC as PIPELINE
from engine.examples import install_ecommerce_example
from engine.runner import run_pipeline
from engine.spec.io import load_pipeline
from engine.workspace import Workspace


def run_demo(ws: Workspace, *, as_json: bool = False) -> dict[str, Any]:
    from app.cli import print_json
    from app.commands import print_run

    folder = install_ecommerce_example(ws.data_dir).parent
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
