"""What DuckDB's allocator settings `RELEASE_AT_ONCE` (engine/store/historian.py) cost on bulk work,
against DuckDB's defaults: the reason a batch run and the service do not get them (issue 12 item 4).

    python tests/benchmarks/bench_duckdb_release.py [--rows 5000000] [--rounds 5] [--memory-limit 1GB]

Each round runs the same bulk work twice, each in a process of its own, taking turns (defaults
first in even rounds): a table of `--rows` rows made from `range`, two GROUP BYs (1,000 and 5,000
groups, `arg_max` among the aggregates, as the tag rollup uses), an INSERT of 40% of the rows back,
a CHECKPOINT; on a file in a temporary folder, under the historian's memory_limit (32 MB on this
machine; spills go to the same folder) unless `--memory-limit` says otherwise. Prints one JSON document:
CPU-seconds and wall seconds per round, their medians, and the ratios release / default.
What the settings save at rest is measured by bench_idle.py (the idle one-tag pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

WORK = """
import json, resource, sys, time, duckdb
config = json.loads(sys.argv[2])
con = duckdb.connect(sys.argv[1], config={"memory_limit": sys.argv[4], "temp_directory": sys.argv[1] + ".tmp", **config})
rows = int(sys.argv[3])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, w0 = cpu(), time.perf_counter()
con.execute(f"CREATE TABLE t AS SELECT i, i % 1000 AS g, random() AS v, 'tag_' || (i % 5000) AS s FROM range({rows}) r(i)")
con.execute("SELECT g, avg(v), count(*), arg_max(s, v) FROM t GROUP BY g").fetchall()
con.execute("SELECT s, min(v), max(v) FROM t GROUP BY s").fetchall()
con.execute(f"INSERT INTO t SELECT * FROM t WHERE i < {rows * 2 // 5}")
con.execute("CHECKPOINT")
print(json.dumps({"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - w0}))
"""


def one(config: dict[str, str], rows: int, memory_limit: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                WORK,
                os.path.join(work, "bulk.duckdb"),
                json.dumps(config),
                str(rows),
                memory_limit,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout)


def main() -> None:
    from engine.store.historian import RELEASE_AT_ONCE, default_memory_limit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory-limit", default=default_memory_limit(), help="DuckDB's (the historian's)")
    args = ap.parse_args()
    contenders = {"default": {}, "release_at_once": dict(RELEASE_AT_ONCE)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    load_start = os.getloadavg()
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            runs[name].append(one(contenders[name], args.rows, args.memory_limit))
    medians = {
        name: {key: round(statistics.median(run[key] for run in rs), 3) for key in ("cpu_s", "wall_s")}
        for name, rs in runs.items()
    }
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "rows": args.rows,
        "rounds": args.rounds,
        "memory_limit": args.memory_limit,
        "load_average_at_start": [round(x, 2) for x in load_start],
        "settings": RELEASE_AT_ONCE,
        "runs": {name: [{k: round(v, 3) for k, v in run.items()} for run in rs] for name, rs in runs.items()},
        "medians": medians,
        "ratios_release_to_default": {
            key: round(medians["release_at_once"][key] / medians["default"][key], 3)
            for key in ("cpu_s", "wall_s")
        },
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
