"""The installers' figures (issue 15): the PyInstaller bundle against the source install it is built
from, whole processes timed from outside, run in turn (bundle, source, bundle, source...) so that a
drifting machine moves both.

    python tests/benchmarks/bench_bundle.py [--bundle dist/aggregator] [--runs 5]

- size: the bundle folder (target < 350 MB with the GUI) and the .deb beside it, if any;
- --help: the bundle's first run after its files were evicted from the page cache where the kernel
  lets us (`cold`; else the first run of this call), and the median of the warm runs (target < 1.5 s
  cold);
- demo: `aggregator demo` (a fresh data directory each run), bundle vs the source install
  (.venv/bin/aggregator); target: the bundle within 20% of the source.
Prints one JSON document.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def size_mb(path: Path) -> float:
    return round(sum(f.lstat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


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
    args = ap.parse_args()
    program = args.bundle / "aggregator"
    home = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    source_env = {**os.environ, "HOME": str(home)}

    evicted = evict(args.bundle)
    help_first = timed([str(program), "--help"], bare)
    help_warm = [timed([str(program), "--help"], bare) for _ in range(args.runs)]
    source_help = [timed([str(args.source), "--help"], source_env) for _ in range(args.runs)]

    bundle_demo, source_demo, ratios = [], [], []
    for i in range(args.runs + 1):  # the first pair warms both up and is not counted
        b = timed([str(program), "demo", "--data-dir", str(home / f"b{i}")], bare)
        s = timed([str(args.source), "demo", "--data-dir", str(home / f"s{i}")], source_env)
        if i:
            bundle_demo.append(b)
            source_demo.append(s)
            ratios.append(b / s)

    debs = sorted(args.bundle.parent.glob("data-aggregator_*.deb"))
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "python": sys.version.split()[0],
        "bundle_mb": size_mb(args.bundle),
        "deb_mb": round(debs[-1].stat().st_size / 1e6, 1) if debs else None,
        "help_first_s": round(help_first, 3),
        "help_first_was_cold": evicted,
        "help_warm_median_s": round(statistics.median(help_warm), 3),
        "source_help_median_s": round(statistics.median(source_help), 3),
        "demo_bundle_median_s": round(statistics.median(bundle_demo), 3),
        "demo_source_median_s": round(statistics.median(source_demo), 3),
        "demo_ratio_median": round(statistics.median(ratios), 3),
        "targets": {"bundle_mb": 350, "help_cold_s": 1.5, "demo_ratio": 1.2},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
