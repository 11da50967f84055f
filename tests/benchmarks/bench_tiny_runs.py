"""CPU of one tiny batch run in process (issue 10: 100 one-second pipelines must start on time).

    python tests/benchmarks/bench_tiny_runs.py [--runs 500] [--pipelines 20]

`--pipelines` 10-row CSV -> CSV pipelines (as bench_service.py's scheduler_real leg serves), run one
after the other through `LocalEngine.runs.start(doc, spec_path=...)` (the call the service makes on
each fire: compile, run record, read, write, events), `--runs` in all after one warm-up run each.
CPU is the process's (every thread: Polars' pools, readers, writers) per run, from
`time.process_time`, so the figure holds on a loaded machine; wall time is given too. Also the
CPU per thread group (from /proc/self/task: Python threads, Polars' and its I/O runtime's).
Prints one JSON document; target < 2 ms of CPU a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # thread_cpu, beside this script
from thread_cpu import thread_ticks  # noqa: E402

TARGET_MS = 2.0


def thread_cpu() -> Counter:
    """CPU ticks per thread group (name without its number) of the live threads."""
    out: Counter = Counter()
    for tid, (name, ticks) in thread_ticks(os.getpid()).items():
        out[(str(tid), re.sub(r"[-_]?\d+$", "", name))] += ticks
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--pipelines", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config").mkdir()
        os.environ["AGGREGATOR_CONFIG"] = str(work / "config")
        (work / "in.csv").write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(10)), encoding="utf-8")
        specs = work / "specs"
        specs.mkdir()
        docs = []
        for i in range(args.pipelines):
            doc = {
                "name": f"p{i:03d}",
                "sources": [
                    {
                        "name": "input",
                        "connector_type": "file",
                        "config": {"path": "../in.csv", "format": "csv"},
                    }
                ],
                "destinations": [
                    {
                        "name": "output",
                        "connector_type": "file",
                        "config": {"path": f"../out/p{i:03d}.csv", "format": "csv", "mode": "overwrite"},
                    }
                ],
                "schedule": {"type": "interval", "seconds": 1},
            }
            path = specs / f"p{i:03d}.json"
            path.write_text(json.dumps(doc), encoding="utf-8")
            docs.append((doc, path))

        from engine.api.local import LocalEngine

        engine = LocalEngine(work / "data")
        try:
            for doc, path in docs:  # warm-up: imports, the Polars pools, the reused threads
                engine.runs.start(doc, spec_path=path, trigger="interval").result()
            ticks0, cpu0, wall0 = thread_cpu(), time.process_time(), time.perf_counter()
            statuses: Counter = Counter()
            for k in range(args.runs):
                doc, path = docs[k % len(docs)]
                statuses[engine.runs.start(doc, spec_path=path, trigger="interval").result()["status"]] += 1
            cpu, wall, ticks1 = time.process_time() - cpu0, time.perf_counter() - wall0, thread_cpu()
        finally:
            engine.close()
    groups: Counter = Counter()
    for (tid, name), t in ticks1.items():
        groups[name] += t - ticks0.get((tid, name), 0)
    per_run = 1000 * cpu / args.runs
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "runs": args.runs,
                "statuses": dict(statuses),
                "cpu_ms_per_run": round(per_run, 3),
                "wall_ms_per_run": round(1000 * wall / args.runs, 3),
                # threads that ended meanwhile are not in these (the reused ones are)
                "cpu_ms_per_run_by_thread": {
                    name: round(1000 * t / os.sysconf("SC_CLK_TCK") / args.runs, 3)
                    for name, t in groups.most_common()
                    if t
                },
                "target": f"< {TARGET_MS:g} ms of CPU a run",
                "met": per_run < TARGET_MS,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
