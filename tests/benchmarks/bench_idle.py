"""Memory and CPU when idle (issue 12, item 4): an idle `aggregator serve` with no pipelines, and an
idle real-time pipeline with one Modbus tag polled every second.

    python tests/benchmarks/bench_idle.py [--legs service,pipeline] [--seconds 60] [--settle 35]
    python tests/benchmarks/bench_idle.py --quick            # --seconds 8 --settle 4
    python tests/benchmarks/bench_idle.py --legs pipeline,floor_polars,floor_duckdb --rounds 3

Each leg runs the real command as a process of its own on a fresh data directory, through a small
launcher (`--launch`) that, on SIGUSR1, writes the process's `sys.modules` to a file and carries on
(the only difference from the plain command). After `--settle` seconds of being ready (the service:
`GET /health` answers; the pipeline: its first rows are in the historian; by default 35 s, past the
start lease during which a new ring buffer keeps points for a viewer: idle is after it), it measures:
- VmRSS of the process and every process below it (targets: service < 90 MB, pipeline < 100 MB);
- CPU over the next `--seconds` (user + system of every thread), as % of one core (target < 1%);
- where the memory is: `/proc/PID/smaps` summed by mapping (anonymous, the heap, each shared
  library), and the heavy packages imported (polars, pyarrow, numpy, duckdb, PySide6, the protocol
  stacks...), which an idle process should only carry if it uses them.
The Modbus simulator (protocols/modbus/simulator.py) runs in a process of its own, not counted.
The floor legs run the same one-tag work written by hand (pymodbus + DuckDB, with or without a
one-row Polars frame: `floor`), measured the same way: what these libraries cost at least.
With `--rounds N` the legs take turns N times (A B C, B C A, ...) and the JSON adds each leg's
RSS and CPU per round, their medians and the ratios of the medians to `floor_polars`.
Prints one JSON document.

Probes (what-ifs, not changes; each in its own run, as they alter what they measure):
    --block numpy,pydantic   the launcher makes `import numpy` raise ImportError (as if not installed)
    --probe-trim             after the window: glibc's malloc_trim(0) in the process, RSS again
    --probe-pageout          after the window: the kernel pages out the process's file-backed pages
                             (process_madvise MADV_PAGEOUT, Linux >= 5.10, root); after --settle
                             seconds of polling, what came back is the code it really runs idle
    --tracemalloc            Python's allocations by package, taken with the module list (tracemalloc
                             from the start: its own bookkeeping adds to the RSS of that run)
    --modules-out FILE       the full `sys.modules` of each leg's process, as JSON
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
TRACEMALLOC = "--tracemalloc" in sys.argv  # probe: Python's allocations by package (costs memory)
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
    """The launcher: the CLI as it is, plus SIGUSR1 -> `sys.modules` into `modules_file`, SIGUSR2 ->
    malloc_trim(0) (only sent by --probe-trim), and the imports blocked by --block."""

    def dump(*_: Any) -> None:
        if tracing:
            Path(modules_file + ".tracemalloc").write_text(json.dumps(python_heap()))
        Path(modules_file + ".part").write_text(json.dumps(sorted(sys.modules)))
        os.replace(modules_file + ".part", modules_file)

    def trim(*_: Any) -> None:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path(modules_file + ".trimmed").write_text("")

    tracing = bool(os.environ.get("BENCH_IDLE_TRACEMALLOC"))
    if tracing:
        import tracemalloc

        tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, trim)
    for name in filter(None, os.environ.get("BENCH_IDLE_BLOCK", "").split(",")):
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    from app.cli import main

    return main(argv)


class _CStream:
    """A Polars frame as an Arrow C stream for DuckDB to scan (as engine/store/historian.py does)."""

    def __init__(self, frame: Any):
        self.frame = frame

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.frame.__arrow_c_stream__(requested_schema)


def floor(modules_file: str, frames: str, port: int, path: str) -> int:
    """The floor (`--legs floor_polars,floor_duckdb`): the same work written by hand with nothing
    else loaded: poll the one float32 register every second with pymodbus and insert it into a
    DuckDB file, through a one-row Polars frame (`frames == "polars"`, as our pipeline does) or as
    parameters (`"plain"`). What an idle one-tag historian costs with these libraries at least."""
    tracing = bool(os.environ.get("BENCH_IDLE_TRACEMALLOC"))
    if tracing:
        import tracemalloc

        tracemalloc.start(1)
    import struct
    from datetime import UTC, datetime

    import duckdb
    from pymodbus.client import ModbusTcpClient

    def dump(*_: Any) -> None:
        if tracing:
            Path(modules_file + ".tracemalloc").write_text(json.dumps(python_heap()))
        Path(modules_file + ".part").write_text(json.dumps(sorted(sys.modules)))
        os.replace(modules_file + ".part", modules_file)

    stop_now: list[int] = []
    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, lambda *_: stop_now.append(1))
    if frames == "polars":
        import polars as pl
    con = duckdb.connect(path)
    con.execute(
        "CREATE TABLE IF NOT EXISTS tags (ts TIMESTAMPTZ, tag VARCHAR, value DOUBLE, quality VARCHAR)"
    )
    client = ModbusTcpClient("127.0.0.1", port=port)
    client.connect()
    print("Streaming (floor)", flush=True)
    while not stop_now:
        started = time.monotonic()
        registers = client.read_holding_registers(0, count=2, device_id=1).registers
        value = struct.unpack(">f", struct.pack(">HH", *registers))[0]
        now = datetime.now(UTC)
        if frames == "polars":
            batch = pl.DataFrame({"ts": [now], "tag": ["power_kw"], "value": [value], "quality": ["good"]})
            con.register("batch", _CStream(batch))  # the Arrow C stream: no pyarrow, as ours
            con.execute("BEGIN")
            con.execute("INSERT INTO tags SELECT * FROM batch")
            con.execute("COMMIT")
            con.unregister("batch")
        else:
            con.execute("INSERT INTO tags VALUES (?, ?, ?, ?)", [now, "power_kw", value, "good"])
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    client.close()
    con.close()
    return 0


def python_heap(top: int = 25) -> dict[str, Any]:
    """tracemalloc's view (--tracemalloc): Python's allocations by the package of the line that made
    them (the import system's own allocations, module code and dicts, under `<frozen ...>`)."""
    import tracemalloc

    by: dict[str, int] = {}
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        name = stat.traceback[0].filename
        if "site-packages/" in name:
            name = name.split("site-packages/")[1].split("/")[0]
        elif str(ROOT) in name:
            name = "/".join(Path(name).relative_to(ROOT).parts[:2])
        elif "/lib/python3" in name:
            name = "stdlib:" + name.split("/lib/python3")[1].split("/", 2)[1]
        by[name] = by.get(name, 0) + stat.size
    traced, peak = tracemalloc.get_traced_memory()
    ordered = sorted(by.items(), key=lambda kv: -kv[1])
    return {
        "traced_mb": round(traced / 2**20, 1),
        "peak_mb": round(peak / 2**20, 1),
        "top_mb": {n: round(b / 2**20, 2) for n, b in ordered[:top]},
    }


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


def threads_of(pid: int) -> dict[str, int]:
    """Threads by name (`comm`: Python's threads show as `python` unless named by the OS)."""
    names: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        names[name] = names.get(name, 0) + 1
    return dict(sorted(names.items(), key=lambda kv: -kv[1]))


def page_out_files(pid: int) -> int:
    """Ask the kernel to page out every file-backed mapping of `pid` (MADV_PAGEOUT through
    process_madvise); returns how many mappings it took. Pages shared with other processes stay."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    sys_process_madvise, madv_pageout = 440, 21  # x86_64 syscall number; <linux/mman.h>

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    pidfd, done = os.pidfd_open(pid), 0
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 6 or not parts[5].startswith("/"):
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                vec = IoVec(lo, hi - lo)
                if libc.syscall(sys_process_madvise, pidfd, ctypes.byref(vec), 1, madv_pageout, 0) >= 0:
                    done += 1
    finally:
        os.close(pidfd)
    return done


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
    if args.modules_out:
        Path(f"{args.modules_out}.{modules_file.name.split('.')[0]}.json").write_text(json.dumps(modules))
    probes: dict[str, Any] = {}
    heap_file = Path(str(modules_file) + ".tracemalloc")
    if heap_file.exists():
        probes["python_heap"] = json.loads(heap_file.read_text())
    smaps = smaps_by_mapping(proc.pid)
    if args.probe_trim:
        marker = Path(str(modules_file) + ".trimmed")
        proc.send_signal(signal.SIGUSR2)
        wait_for(marker.exists, proc, modules_file, timeout=30)
        probes["rss_mb_after_malloc_trim"] = round(tree_rss_mb(proc.pid), 1)
        probes["smaps_after_malloc_trim"] = smaps_by_mapping(proc.pid)
    if args.probe_pageout:
        probes["mappings_paged_out"] = page_out_files(proc.pid)
        probes["rss_mb_right_after_pageout"] = round(tree_rss_mb(proc.pid), 1)
        time.sleep(args.settle)
        probes["rss_mb_after_pageout_and_settle"] = round(tree_rss_mb(proc.pid), 1)
        probes["smaps_after_pageout_and_settle"] = smaps_by_mapping(proc.pid)
    return {
        "rss_mb": round(rss_settled, 1),
        "rss_mb_window_max": round(max(samples), 1),
        "cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2),
        "cpu_s_in_window": round(c1 - c0, 3),
        "window_s": round(t1 - t0, 1),
        "threads": threads_of(proc.pid),
        "modules": len(modules),
        "heavy_imported": heavy_imported(modules),
        "smaps": smaps,
        **probes,
    }


def spawn(work: Path, name: str, argv: list[str], block: str = "") -> tuple[subprocess.Popen, Path, Path]:
    modules_file = work / f"{name}.modules.json"
    out = work / f"{name}.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--launch", str(modules_file), *argv],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "AGGREGATOR_CONFIG": str(work / "config"),
                "BENCH_IDLE_BLOCK": block,
                "BENCH_IDLE_TRACEMALLOC": "1" if TRACEMALLOC else "",
            },
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
        work, "service", ["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"], args.block
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


def pipeline_leg(args, work: Path) -> dict[str, Any]:
    """`aggregator run` of a real-time pipeline `modbus -> historian`, one tag polled every second."""
    from bench_modbus import start_simulator

    from tests.pipelines import historian_rows, one_modbus_tag

    sim, port = start_simulator(14)
    data = work / "pipeline-data"
    spec = work / "one_tag.json"
    spec.write_text(json.dumps(one_modbus_tag(port)))
    try:
        proc, modules_file, out = spawn(
            work, "pipeline", ["run", str(spec), "--data-dir", str(data)], args.block
        )
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


def floor_leg(frames: str):
    def leg(args, work: Path) -> dict[str, Any]:
        from bench_modbus import start_simulator

        sim, port = start_simulator(14)
        data = work / f"floor-{frames}"
        data.mkdir()
        name = f"floor_{frames}"
        modules_file, out = work / f"{name}.modules.json", work / f"{name}.out"
        try:
            with open(out, "wb") as fh:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--floor",
                        str(modules_file),
                        frames,
                        str(port),
                        str(data / "historian.duckdb"),
                    ],
                    cwd=ROOT,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env={
                        **os.environ,
                        "PYTHONUNBUFFERED": "1",
                        "BENCH_IDLE_TRACEMALLOC": "1" if TRACEMALLOC else "",
                    },
                )
            try:
                wait_for(lambda: "Streaming" in out.read_text(errors="replace"), proc, out)
                result = measure(proc, modules_file, args)
            finally:
                code = stop(proc)
        finally:
            sim.terminate()
            sim.wait(10)
        result.update(exit_code=code)
        return result

    return leg


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One leg over the rounds: every round's RSS and CPU, and their medians."""
    import statistics

    rss = [r["rss_mb"] for r in results]
    cpu = [r["cpu_percent_of_one_core"] for r in results]
    return {
        "rss_mb": rss,
        "rss_mb_window_max": [r["rss_mb_window_max"] for r in results],  # sampled through the window
        "cpu_percent": cpu,
        "rss_mb_median": round(statistics.median(rss), 1),
        "cpu_percent_median": round(statistics.median(cpu), 2),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--launch":
        sys.exit(launch(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) > 5 and sys.argv[1] == "--floor":
        sys.exit(floor(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--legs", default="service,pipeline")
    ap.add_argument("--seconds", type=float, help="the idle CPU window (default 60, --quick 8)")
    ap.add_argument(
        "--settle",
        type=float,
        help="seconds after ready before measuring (default 35: past the ring buffers' 30 s start lease; --quick 4)",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--rounds", type=int, default=1, help="rounds of the legs, order rotating; medians and ratios"
    )
    ap.add_argument("--block", default="", help="probe: top-level modules whose import is made to fail")
    ap.add_argument("--probe-trim", action="store_true", help="probe: malloc_trim(0) after the window")
    ap.add_argument("--probe-pageout", action="store_true", help="probe: page out file-backed memory")
    ap.add_argument("--tracemalloc", action="store_true", help="probe: Python's heap by package")
    ap.add_argument("--modules-out", help="write each leg's sys.modules to FILE.<leg>.json")
    args = ap.parse_args()
    # 60 s: the window holds the idle work that comes every 30 or 60 s (the write of `tag_last`, the
    # rollup's advance); a shorter one may miss it and show less CPU than there is
    args.seconds = args.seconds or (8.0 if args.quick else 60.0)
    args.settle = args.settle or (4.0 if args.quick else 35.0)
    legs = {
        "service": service_leg,
        "pipeline": pipeline_leg,
        "floor_polars": floor_leg("polars"),
        "floor_duckdb": floor_leg("plain"),
    }
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "probes": {
            "block": args.block,
            "trim": args.probe_trim,
            "pageout": args.probe_pageout,
            "tracemalloc": args.tracemalloc,
        },
    }
    names = args.legs.split(",")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]  # A B C, B C A, ...
            work = Path(tmp) / f"round{round_no}"
            work.mkdir()
            for name in order:
                runs[name].append(legs[name](args, work))
    for name in names:
        report[name] = runs[name][-1]  # the last round's details (smaps, threads, modules)
    if args.rounds > 1:
        report["rounds"] = {name: summary(runs[name]) for name in names}
        base = "floor_polars" if "floor_polars" in names else None
        if base:
            report["ratios_to_floor_polars"] = {
                name: {
                    key: round(report["rounds"][name][key] / report["rounds"][base][key], 2)
                    for key in ("rss_mb_median", "cpu_percent_median")
                    if report["rounds"][base][key]
                }
                for name in names
                if name != base
            }
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
