"""The installers' figures (issue 15): the PyInstaller bundle against the source install it is built
from, whole processes timed from outside, run in turn (bundle, source, bundle, source...) so that a
drifting machine moves both.

    python tests/benchmarks/bench_bundle.py [--bundle dist/aggregator] [--runs 5] [--baseline OLD/aggregator]

- size: the bundle folder (target < 350 MB with the GUI) and the .deb beside it, if any;
- --help: the bundle's first run after its files were evicted from the page cache where the kernel
  lets us (`cold`; else the first run of this call), and the median of the warm runs (target < 1.5 s
  cold);
- demo: `aggregator demo` (a fresh data directory each run), bundle vs the source install
  (.venv/bin/aggregator); target: the bundle within 20% of the source. Wall seconds and CPU-seconds
  (user + system of the finished child: less sensitive to a loaded machine), medians of `--runs`
  rounds, ratios taken round by round;
- --baseline: another bundle (e.g. the previous build) taken in the same rotation for --help and
  demo (bundle, source, baseline, bundle, ...), to compare two builds in one pass.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def size_mb(path: Path) -> float:
    return round(sum(f.lstat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


CPU: list[float] = []  # CPU-seconds of each finished `timed` child, in order


def timed(command: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def evict(folder: Path) -> bool:
    """Drop `folder`'s files from the page cache (posix_fadvise DONTNEED): the next run reads them
    from disk, as after a reboot. False when the kernel would not."""
    try:
        for f in folder.rglob("*"):
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=ROOT / "dist" / "aggregator")
    ap.add_argument("--source", type=Path, default=ROOT / ".venv" / "bin" / "aggregator")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="another bundle folder, timed in the same rotation")
    args = ap.parse_args()
    program = args.bundle / "aggregator"
    home = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    source_env = {**os.environ, "HOME": str(home)}
    load = [os.getloadavg()[0]]

    evicted = evict(args.bundle)
    help_first = timed([str(program), "--help"], bare)
    contenders = {"bundle": ([str(program)], bare), "source": ([str(args.source)], source_env)}
    if args.baseline:
        evict(args.baseline)
        contenders["baseline"] = ([str(args.baseline / "aggregator")], bare)
    wall: dict[str, dict[str, list[float]]] = {"help": {}, "demo": {}}
    cpu: dict[str, dict[str, list[float]]] = {"help": {}, "demo": {}}
    for i in range(args.runs + 1):  # the first round warms every contender up and is not counted
        for name, (command, env) in contenders.items():
            for leg, extra in (
                ("help", ["--help"]),
                ("demo", ["demo", "--data-dir", str(home / f"{name}{i}")]),
            ):
                w = timed(command + extra, env)
                if i:
                    wall[leg].setdefault(name, []).append(w)
                    cpu[leg].setdefault(name, []).append(CPU[-1])
        load.append(os.getloadavg()[0])

    def ratios(leg: str, a: str, b: str, table: dict) -> float:
        return med([x / y for x, y in zip(table[leg][a], table[leg][b], strict=True)])

    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, load {min(load):.1f}-{max(load):.1f}",
        "python": sys.version.split()[0],
        "bundle_mb": size_mb(args.bundle),
        "help_first_s": round(help_first, 3),
        "help_first_was_cold": evicted,
        "help_cpu_first_s": round(CPU[0], 3),
    }
    for leg in ("help", "demo"):
        for name in contenders:
            result[f"{leg}_{name}_median_s"] = med(wall[leg][name])
            result[f"{leg}_{name}_cpu_median_s"] = med(cpu[leg][name])
        result[f"{leg}_ratio_bundle_source"] = ratios(leg, "bundle", "source", wall)
        result[f"{leg}_cpu_ratio_bundle_source"] = ratios(leg, "bundle", "source", cpu)
        if args.baseline:
            result[f"{leg}_ratio_bundle_baseline"] = ratios(leg, "bundle", "baseline", wall)
            result[f"{leg}_cpu_ratio_bundle_baseline"] = ratios(leg, "bundle", "baseline", cpu)
            result[f"{leg}_ratio_baseline_source"] = ratios(leg, "baseline", "source", wall)
    if args.baseline:
        result["baseline_mb"] = size_mb(args.baseline)
    debs = sorted(args.bundle.parent.glob("data-aggregator_*.deb"))
    result["deb_mb"] = round(debs[-1].stat().st_size / 1e6, 1) if debs else None
    result["demo_ratio_median"] = result["demo_ratio_bundle_source"]  # the target's figure
    result["targets"] = {"bundle_mb": 350, "help_cold_s": 1.5, "demo_ratio": 1.2}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
