"""What an idle service carries (issue 12, item 4): an idle `aggregator serve` with no pipelines
has not imported Polars, pyarrow, pandas, DuckDB, Qt or any protocol stack, and stays under its RSS
target. The modules are read from the process itself: a launcher writes `sys.modules` on SIGUSR1.
Figures and the breakdown (the one-tag pipeline too): tests/benchmarks/bench_idle.py and
docs/performance.md "Peers and idle memory (issue 12)"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
IDLE_SERVICE_TARGET_MB = 90.0  # issue 12's target for an idle service with no pipelines
GUI = ("PySide6", "shiboken6", "pyqtgraph", "NodeGraphQt", "ui")
PROTOCOL_STACKS = ("asyncua", "pymodbus", "paho", "pydnp3", "nats", "pika", "redis", "confluent_kafka")
# numpy too: it came with sqlite-utils until the metadata store moved to plain sqlite3 (~10 MB idle,
# docs/performance.md).
DATA = ("polars", "pyarrow", "pandas", "duckdb", "numpy")

LAUNCHER = """
import json, os, signal, sys
out = sys.argv[1]
def dump(*_):
    with open(out + ".part", "w") as fh:
        json.dump(sorted(sys.modules), fh)
    os.replace(out + ".part", out)
signal.signal(signal.SIGUSR1, dump)
from app.cli import main
sys.exit(main(sys.argv[2:]))
"""


def launch(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, Path, Path]:
    modules, out = tmp_path / "modules.json", tmp_path / "out.txt"
    environ = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AGGREGATOR_CONFIG": str(tmp_path / "config"),
        **(env or {}),
    }
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(modules), *args],
            cwd=ROOT,
            env=environ,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return proc, modules, out


def tops(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_an_idle_service_carries_no_data_gui_or_protocol_stack_and_stays_under_its_target(tmp_path):
    proc, modules_file, out = launch(
        tmp_path, "serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or "serving " in out.read_text(errors="replace"),
            timeout=60,
            what="the service to serve",
        )
        assert proc.poll() is None, out.read_text(errors="replace")
        url = out.read_text(errors="replace").split(" at ", 1)[1].split()[0]
        import httpx

        assert httpx.get(url + "/health", timeout=30).status_code == 200  # the API's path is loaded too
        proc.send_signal(signal.SIGUSR1)
        wait_for(modules_file.exists, timeout=30, what="the module list")
        loaded = tops(json.loads(modules_file.read_text()))
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, out.read_text(errors="replace")
    assert loaded & set(DATA + GUI + PROTOCOL_STACKS) == set()
    # uvicorn would take uvloop whenever installed (app/serve.py asks for asyncio's loop)
    assert "uvloop" not in loaded
    assert "app" in loaded and "fastapi" in loaded  # the list is the service's own
    assert rss < IDLE_SERVICE_TARGET_MB
