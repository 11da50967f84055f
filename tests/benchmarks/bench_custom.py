"""Custom connector benchmark (issue 13): rows/s through a `custom` source whose plugin class
yields the same rows three ways, in the same run: `fetch_batches` with Arrow tables (the fast
path), `fetch_batches` with Polars frames, and the user guide's `fetch_data` template returning a
list of dicts (what a user writes first). 6 columns: int, string, float, bool, datetime, string.

    python tests/benchmarks/bench_custom.py [--rows 1000000] [--repeats 3]

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PLUGIN = '''
import datetime as dt
import sys
import types

import polars as pl

# the loader executes this file anew for every run: the prepared rows live in a module of their own
CACHE = sys.modules.setdefault("_bench_custom_cache", types.ModuleType("_bench_custom_cache")).__dict__

BASE = dt.datetime(2024, 1, 1)


def frame(start, n):
    return pl.DataFrame({
        "id": range(start, start + n),
        "meter": [f"m{i % 500}" for i in range(start, start + n)],
        "kwh": [i * 0.25 for i in range(start, start + n)],
        "ok": [i % 3 == 0 for i in range(start, start + n)],
        "ts": [BASE + dt.timedelta(seconds=i) for i in range(start, start + n)],
        "site": ["north"] * n,
    })


class Prepared:
    """The rows are made once, outside the timing: the legs time the connector, not the maker."""

    def __init__(self, config):
        self.rows, self.kind = config["rows"], config["kind"]
        key = self.rows
        if key not in CACHE:
            batches = [frame(s, min(100_000, self.rows - s)) for s in range(0, self.rows, 100_000)]
            CACHE[key] = (batches, [r for b in batches for r in b.iter_rows(named=True)])
        self.batches, self.records = CACHE[key]

    def fetch_batches(self):
        if self.kind == "arrow":
            for b in self.batches:
                yield b.to_arrow()
        else:
            yield from self.batches


class Template:
    def __init__(self, config):
        self.inner = Prepared(config)

    def fetch_data(self):
        return self.inner.records
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from engine.connectors import registry
    from engine.context import RunContext

    cls = registry.get("custom")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "plugins").mkdir()
        (Path(tmp) / "plugins" / "bench_plugin.py").write_text(PLUGIN)
        ctx = RunContext(data_dir=Path(tmp), base_dir=Path(tmp))

        def run(implementation: str, kind: str) -> int:
            cfg = cls.SourceConfig.model_validate(
                {"implementation": implementation, "config": {"rows": args.rows, "kind": kind}}
            )
            return sum(b.height for b in cls.make_source(cfg, ctx, "s").read())

        run("bench_plugin.Template", "records")  # warm the plugin's cache
        legs = {
            "fetch_batches_arrow": ("bench_plugin.Prepared", "arrow"),
            "fetch_batches_polars": ("bench_plugin.Prepared", "polars"),
            "fetch_data_list_of_dicts": ("bench_plugin.Template", "records"),
        }
        out: dict = {}
        for name, (impl, kind) in legs.items():
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                assert run(impl, kind) == args.rows
                times.append(time.perf_counter() - t)
            out[name] = {"rows_per_s": round(args.rows / statistics.median(times))}
    out["rows"] = args.rows
    out["load_average"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
