"""Two commands timed as whole processes, in turn (A B A B ...), with each pair's ratio A / B.

    python tests/benchmarks/bench_pairs.py [-n 20] [--warmup 2] [--timeout 600] --vs "COMMAND B" -- COMMAND A ...

On a machine whose speed drifts (a shared VM), the median of the pairs' ratios cancels the drift
better than a ratio of two medians: both runs of a pair see about the same machine. Each run's wall
seconds (a monotonic clock around the child), user and system CPU seconds and peak RSS are the
kernel's accounting of that child (`os.wait4`), start-up included; what a command prints is thrown
away. `--vs` is one string split as a shell splits words. Prints one JSON document: every run, and
the min, median and max of each figure and of each ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str]) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{shlex.join(cmd)} exited with {proc.returncode}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "user_s": usage.ru_utime,
        "peak_mib": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20, help="pairs counted (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="pairs run first and not counted (default 2)")
    ap.add_argument("--timeout", type=float, default=600, help="stop starting pairs after this many seconds")
    ap.add_argument("--vs", required=True, help="command B, one string")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="command A, after --")
    args = ap.parse_args()
    a = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not a:
        ap.error("command A goes after --")
    if args.n < 1 or args.warmup < 0:
        ap.error("-n is 1 or more, --warmup 0 or more")
    b = shlex.split(args.vs)
    for _ in range(args.warmup):
        timed(a)
        timed(b)
    runs: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    deadline = time.monotonic() + args.timeout
    while len(runs["a"]) < args.n and time.monotonic() < deadline:
        runs["a"].append(timed(a))
        runs["b"].append(timed(b))
    figures = ("wall_s", "cpu_s", "user_s", "peak_mib")
    result = {
        "a": shlex.join(a),
        "b": shlex.join(b),
        "pairs": len(runs["a"]),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        **{f"{side}_{f}": spread([r[f] for r in runs[side]]) for side in ("a", "b") for f in figures},
        **{
            f"a_over_b_{f}": spread([x[f] / y[f] for x, y in zip(runs["a"], runs["b"], strict=True)])
            for f in ("wall_s", "cpu_s", "user_s")
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
