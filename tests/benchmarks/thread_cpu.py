"""CPU of each thread of a running process over a window (issue 12, docs/performance.md): user +
system time from `/proc/PID/task/*/stat` read twice, as % of one core, with each thread's name
(Python threads by `py-spy dump` when py-spy is installed beside this interpreter: the OS names
them all "python"). Linux only. Prints one JSON object.

    python tests/benchmarks/thread_cpu.py PID [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (the kernel's thread name, user + system clock ticks so far) of the live threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, int(fields[11]) + int(fields[12]))  # utime, stime
    return out


def sample(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (the kernel's thread name, CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    return {tid: (name, ticks / tick) for tid, (name, ticks) in thread_ticks(pid).items()}


def python_names(pid: int) -> dict[int, str]:
    """tid -> the Python thread's name, from `py-spy dump` (empty without py-spy)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {}
    dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
    return {int(t): n for t, n in re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, flags=re.MULTILINE)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pid", type=int)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    before, start = sample(args.pid), time.monotonic()
    time.sleep(args.seconds)
    after, window = sample(args.pid), time.monotonic() - start
    names = python_names(args.pid)
    threads = []
    for tid, (name, cpu) in after.items():
        used = cpu - before.get(tid, (name, 0.0))[1]
        if used > 0:
            threads.append(
                {
                    "tid": tid,
                    "name": names.get(tid, name),
                    "percent_of_one_core": round(100 * used / window, 1),
                }
            )
    threads.sort(key=lambda t: -t["percent_of_one_core"])
    total = sum(t["percent_of_one_core"] for t in threads)
    print(
        json.dumps(
            {
                "pid": args.pid,
                "window_s": round(window, 1),
                "percent_of_one_core": round(total, 1),
                "note": "threads that started and ended inside the window (timers) are not counted",
                "threads": threads,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
