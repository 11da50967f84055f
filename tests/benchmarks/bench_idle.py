"""Memory and CPU when idle (issue 12, item 4): an idle `aggregator serve` with no pipelines, and an
idle real-time pipeline with one Modbus tag polled every second.

    python tests/benchmarks/bench_idle.py [--legs service,pipeline] [--seconds 20] [--settle 5]
    python tests/benchmarks/bench_idle.py --quick            # --seconds 8 --settle 4

Each leg runs the real command as a process of its own on a fresh data directory, through a small
launcher (`--launch`) that, on SIGUSR1, writes the process's `sys.modules` to a file and carries on
(the only difference from the plain command). After `--settle` seconds of being ready (the service:
`GET /health` answers; the pipeline: its first rows are in the historian), it measures:
- VmRSS of the process and every process below it (targets: service < 90 MB, pipeline < 100 MB);
- CPU over the next `--seconds` (user + system of every thread), as % of one core (target < 1%);
- where the memory is: `/proc/PID/smaps` summed by mapping (anonymous, the heap, each shared
  library), and the heavy packages imported (polars, pyarrow, numpy, duckdb, PySide6, the protocol
  stacks...), which an idle process should only carry if it uses them.
The Modbus simulator (protocols/modbus/simulator.py) runs in a process of its own, not counted.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
TARGETS_MB = {"service": 90.0, "pipeline": 100.0}
TARGET_CPU_PERCENT = 1.0
# Top-level packages an idle process carries only if it uses them (the memory they cost idle).
HEAVY = (
    "polars",
    "pyarrow",
    "numpy",
    "pandas",
    "duckdb",
    "PySide6",
    "shiboken6",
    "pyqtgraph",
    "NodeGraphQt",
    "asyncua",
    "pymodbus",
    "paho",
    "pydnp3",
    "nats",
    "pika",
    "redis",
    "confluent_kafka",
    "adbc_driver_postgresql",
    "connectorx",
    "httpx",
    "keyring",
    "cryptography",
)


def launch(modules_file: str, argv: list[str]) -> int:
    """The launcher: the CLI as it is, plus SIGUSR1 -> `sys.modules` into `modules_file`."""

    def dump(*_: Any) -> None:
        Path(modules_file + ".part").write_text(json.dumps(sorted(sys.modules)))
        os.replace(modules_file + ".part", modules_file)

    signal.signal(signal.SIGUSR1, dump)
    from app.cli import main

    return main(argv)


def modules_of(proc: subprocess.Popen, modules_file: Path, timeout: float = 30) -> list[str]:
    modules_file.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not modules_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"no module list from pid {proc.pid}")
        time.sleep(0.05)
    return json.loads(modules_file.read_text())


def heavy_imported(modules: list[str]) -> list[str]:
    tops = {m.split(".")[0] for m in modules}
    return [name for name in HEAVY if name in tops]


def smaps_by_mapping(pid: int, top: int = 14) -> dict[str, Any]:
    """RSS (MB) summed by what is mapped: anonymous memory, the heap, stacks, each file by name."""
    groups: dict[str, int] = {}
    name = "?"
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split(None, 1)[0]
            if not head.endswith(":"):  # a mapping's header: address perms offset dev inode [path]
                parts = line.split(None, 5)
                path = parts[5].strip() if len(parts) > 5 else ""
                name = Path(path).name if path.startswith("/") else (path or "[anon]")
                if name.startswith("[anon"):
                    name = "[anon]"
            elif head == "Rss:":
                groups[name] = groups.get(name, 0) + int(line.split()[1])
    ordered = sorted(groups.items(), key=lambda kv: -kv[1])
    files = sum(kb for n, kb in groups.items() if not n.startswith("["))
    return {
        "total_mb": round(sum(groups.values()) / 1024, 1),
        "anon_mb": round(groups.get("[anon]", 0) / 1024, 1),
        "heap_mb": round(groups.get("[heap]", 0) / 1024, 1),
        "file_backed_mb": round(files / 1024, 1),
        "top_mb": {n: round(kb / 1024, 1) for n, kb in ordered[:top]},
    }


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def measure(proc: subprocess.Popen, modules_file: Path, args) -> dict[str, Any]:
    """After the settle time: RSS, idle CPU over the window, smaps and the imported heavy packages."""
    from bench_service import cpu_seconds, tree_rss_mb

    time.sleep(args.settle)
    rss_settled = tree_rss_mb(proc.pid)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    samples = []
    while time.monotonic() - t0 < args.seconds:
        time.sleep(min(1.0, args.seconds))
        samples.append(tree_rss_mb(proc.pid))
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    modules = modules_of(proc, modules_file)
    return {
        "rss_mb": round(rss_settled, 1),
        "rss_mb_window_max": round(max(samples), 1),
        "cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2),
        "cpu_s_in_window": round(c1 - c0, 3),
        "window_s": round(t1 - t0, 1),
        "threads": threads_of(proc.pid),
        "modules": len(modules),
        "heavy_imported": heavy_imported(modules),
        "smaps": smaps_by_mapping(proc.pid),
    }


def spawn(work: Path, name: str, argv: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    modules_file = work / f"{name}.modules.json"
    out = work / f"{name}.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--launch", str(modules_file), *argv],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "AGGREGATOR_CONFIG": str(work / "config")},
        )
    return proc, modules_file, out


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_for(condition, proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"not ready: {out.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


def service_leg(args, work: Path) -> dict[str, Any]:
    """`aggregator serve` with no pipelines, on a fresh data directory."""
    data = work / "service-data"
    proc, modules_file, out = spawn(
        work, "service", ["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    )
    try:
        wait_for(lambda: "serving " in out.read_text(errors="replace"), proc, out)
        result = measure(proc, modules_file, args)
    finally:
        code = stop(proc)
    result.update(exit_code=code, target_mb=TARGETS_MB["service"])
    result["met"] = (
        result["rss_mb"] < TARGETS_MB["service"] and result["cpu_percent_of_one_core"] < TARGET_CPU_PERCENT
    )
    return result


def pipeline_spec(port: int) -> dict[str, Any]:
    return {
        "name": "one modbus tag",
        "spec_version": 1,
        "nodes": [
            {
                "id": "meter",
                "kind": "source",
                "connector_type": "modbus",
                "config": {
                    "devices": [
                        {
                            "name": "meter1",
                            "host": "127.0.0.1",
                            "port": port,
                            "unit_id": 1,
                            "poll_interval_ms": 1000,
                            "tags": [
                                {"name": "power_kw", "table": "holding", "address": 0, "type": "float32"}
                            ],
                        }
                    ]
                },
            },
            {
                "id": "historian",
                "kind": "destination",
                "inputs": ["meter"],
                "connector_type": "historian",
                "config": {},
            },
        ],
        "schedule": {"type": "real_time"},
    }


def historian_rows(data: Path) -> int:
    """Rows in the pipeline's historian, read without disturbing its writer (a copy of the file)."""
    import shutil

    import duckdb

    source = data / "historian.duckdb"
    if not source.exists():
        return 0
    copy = data.parent / "historian-copy.duckdb"
    try:
        shutil.copyfile(source, copy)
        wal = source.with_name(source.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        con = duckdb.connect(str(copy), read_only=True)
        try:
            tables = {
                r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            }
            return con.execute("SELECT count(*) FROM tags").fetchone()[0] if "tags" in tables else 0
        finally:
            con.close()
    except (OSError, duckdb.Error):
        return 0
    finally:
        for f in (copy, copy.with_name(copy.name + ".wal")):
            f.unlink(missing_ok=True)


def pipeline_leg(args, work: Path) -> dict[str, Any]:
    """`aggregator run` of a real-time pipeline `modbus -> historian`, one tag polled every second."""
    from bench_modbus import start_simulator

    sim, port = start_simulator(14)
    data = work / "pipeline-data"
    spec = work / "one_tag.json"
    spec.write_text(json.dumps(pipeline_spec(port)))
    try:
        proc, modules_file, out = spawn(work, "pipeline", ["run", str(spec), "--data-dir", str(data)])
        try:
            wait_for(lambda: "Streaming" in out.read_text(errors="replace"), proc, out)
            started = time.monotonic()
            # Ready when it has stored something (a copy of the file is read; checked every second).
            wait_for(
                lambda: time.sleep(1) or historian_rows(data) > 0 or time.monotonic() - started > 20,
                proc,
                out,
            )
            result = measure(proc, modules_file, args)
            result["rows_stored_at_end"] = historian_rows(data)
        finally:
            code = stop(proc)
    finally:
        sim.terminate()
        sim.wait(10)
    result.update(exit_code=code, target_mb=TARGETS_MB["pipeline"])
    result["met"] = (
        result["rss_mb"] < TARGETS_MB["pipeline"] and result["cpu_percent_of_one_core"] < TARGET_CPU_PERCENT
    )
    return result


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--launch":
        sys.exit(launch(sys.argv[2], sys.argv[3:]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--legs", default="service,pipeline")
    ap.add_argument("--seconds", type=float, help="the idle CPU window (default 20, --quick 8)")
    ap.add_argument(
        "--settle", type=float, help="seconds after ready before measuring (default 5, --quick 4)"
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    args.seconds = args.seconds or (8.0 if args.quick else 20.0)
    args.settle = args.settle or (4.0 if args.quick else 5.0)
    legs = {"service": service_leg, "pipeline": pipeline_leg}
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.legs.split(","):
            report[name] = legs[name](args, Path(tmp))
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
