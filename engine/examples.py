"""The shipped e-commerce example (the user guide's): installed into a data directory for
`aggregator demo` and the desktop app's "Run demo", from the one copy in resources/."""

from __future__ import annotations

import shutil
from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parents[1] / "resources"
ECOMMERCE_SPEC = "ecommerce_orders.json"
ECOMMERCE_OUTPUTS = ("unified_orders.json", "rejected_orders.json")


def install_ecommerce_example(data_dir: Path | str) -> Path:
    """Copy the two shop exports and the graph-form pipeline into <data dir>/demo/ecommerce, with
    the last run's file outputs removed; returns the pipeline file's path."""
    target = Path(data_dir) / "demo" / "ecommerce"
    target.mkdir(parents=True, exist_ok=True)
    for item in (RESOURCES_DIR / "examples" / "ecommerce").iterdir():
        if item.is_file():
            shutil.copyfile(item, target / item.name)
    spec = target / ECOMMERCE_SPEC
    shutil.copyfile(RESOURCES_DIR / "pipelines" / ECOMMERCE_SPEC, spec)
    for stale in ECOMMERCE_OUTPUTS:
        (target / stale).unlink(missing_ok=True)
    return spec
