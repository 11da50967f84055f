"""`aggregator demo`: the user guide's e-commerce example, end to end, in the data directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import EngineAPI


def run_demo(engine: EngineAPI, *, as_json: bool = False) -> dict[str, Any]:
    from app.cli import print_json
    from app.commands import print_run

    demo = engine.pipelines.install_demo()
    spec = Path(demo["spec_path"])
    folder = spec.parent
    job = engine.runs.start(demo["document"], spec_path=spec, base_dir=folder, trigger="demo")
    record = job.result()
    targets = record.pop("_targets", {})
    if as_json:
        print_json({**record, "outputs": targets})
        return record
    print(f"Demo: e-commerce order unification ({spec})")
    print_run(record, targets)
    if record["status"] in ("success", "warning"):
        rows = _count(engine, "SELECT count(*) AS n FROM orders")
        rejects = _count(engine, f"SELECT count(*) AS n FROM _rejects WHERE run_id = '{record['run_id']}'")
        print("\nWhere the results are:")
        print(f"  unified orders (JSON):   {folder / 'unified_orders.json'}")
        print(f"  historian table 'orders': {engine.health.status()['historian']} ({rows} rows)")
        print(
            f"  rejected records:        {folder / 'rejected_orders.json'}"
            f" and table '_rejects' ({rejects} rows for this run, with reason and node)"
        )
        print(f"  run history:             aggregator runs --data-dir {engine.data_dir}")
        print(f"  open the pipeline:       {spec}")
    else:
        print(f"error: demo run failed: {record['error']}")
    return record


def _count(engine: EngineAPI, sql: str) -> int:
    """One count through the read-only SQL console (run ids are generated: no quoting to escape)."""
    return int(engine.data.sql(sql)["frame"]["n"][0])
