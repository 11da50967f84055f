"""What an idle one-tag real-time pipeline imports (issue 12 item 4): `aggregator run` of
`modbus -> historian`, one tag polled every second, must not carry the GUI, the other protocol
stacks, the HTTP service, pyarrow, pandas or numpy. Their cost is memory: bench_idle.py measures the RSS
(docs/performance.md, "Idle memory and CPU"); this test only names what may not be imported, so
that an import added on this path fails here rather than shows up as megabytes later.

A real process against a real Modbus simulator: its `sys.modules` is taken (SIGUSR1) once it has
stored rows, i.e. after the first polls, inserts and commits have run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocols.modbus.simulator import ModbusSimulator
from tests.pipelines import historian_rows, one_modbus_tag

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the module list is taken on SIGUSR1 (POSIX)")

# Top-level packages the idle one-tag Modbus -> historian process must not import.
NOT_IMPORTED = (
    "PySide6",
    "shiboken6",
    "pyqtgraph",
    "NodeGraphQt",
    "asyncua",  # OPC UA
    "paho",  # MQTT
    "pydnp3",
    "nats",
    "pika",
    "redis",
    "confluent_kafka",
    "adbc_driver_postgresql",
    "connectorx",
    "psycopg",
    "pymysql",
    "httpx",
    "fastapi",
    "starlette",
    "uvicorn",
    "pyarrow",
    "pandas",
)
# Our modules it must not import: the GUI, the HTTP service, the other protocols' clients, the
# file formats' readers and writers (engine/connectors/formats loads them on first use).
NOT_IMPORTED_OURS = (
    "ui",
    "app.gui",
    "app.http",
    "protocols.opcua.",
    "protocols.mqtt.",
    "protocols.dnp3.",
    "engine.connectors.formats.csv",
    "engine.connectors.formats.xml",
    "engine.connectors.formats.excel",
    "engine.connectors.formats.json",
    "engine.connectors.formats.parquet",
)

LAUNCHER = """
import json, os, signal, sys
def dump(*_):
    with open(sys.argv[1] + ".part", "w") as fh:
        json.dump(sorted(sys.modules), fh)
    os.replace(sys.argv[1] + ".part", sys.argv[1])
signal.signal(signal.SIGUSR1, dump)
from app.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _wait(condition, proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"pipeline not there: {out.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def idle_pipeline_modules(tmp_path_factory) -> list[str]:
    """`sys.modules` of `aggregator run` (modbus -> historian, one tag at 1 s) after it stored rows."""
    work = tmp_path_factory.mktemp("idle_pipeline")
    data, modules_file, out = work / "data", work / "modules.json", work / "run.out"
    with ModbusSimulator(meters=1) as sim:
        spec = work / "one_tag.json"
        spec.write_text(json.dumps(one_modbus_tag(sim.port)))
        env = {**os.environ, "AGGREGATOR_CONFIG": str(work / "config"), "PYTHONUNBUFFERED": "1"}
        with open(out, "wb") as fh:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    LAUNCHER,
                    str(modules_file),
                    "run",
                    str(spec),
                    "--data-dir",
                    str(data),
                ],
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait(lambda: historian_rows(data) > 0, proc, out)
            proc.send_signal(signal.SIGUSR1)
            _wait(modules_file.exists, proc, out)
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: how an endless stream ends
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return json.loads(modules_file.read_text())


def test_the_idle_one_tag_pipeline_imports_no_gui_other_protocol_or_service_stack(idle_pipeline_modules):
    modules = idle_pipeline_modules
    assert "protocols.modbus.tcp" in modules  # the list is of the pipeline process (its Modbus/TCP client)
    tops = {m.split(".")[0] for m in modules}
    assert sorted(tops.intersection(NOT_IMPORTED)) == []
    ours = [
        m
        for m in modules
        if any(m == p or m.startswith(p if p.endswith(".") else p + ".") for p in NOT_IMPORTED_OURS)
    ]
    assert ours == []


def test_a_modbus_tcp_pipeline_does_not_import_pymodbus(idle_pipeline_modules):
    # Modbus/TCP reads go through our own client (protocols/modbus/tcp.py, issue 12); pymodbus
    # serves RTU lines only, so a TCP-only pipeline does not carry it.
    assert "pymodbus" not in {m.split(".")[0] for m in idle_pipeline_modules}


def test_the_idle_one_tag_pipeline_imports_no_numpy(idle_pipeline_modules):
    # numpy comes with the ring buffer's first kept point; a foreground run has no viewer in its
    # process, so its buffers start without a lease and keep nothing (10.7 MB, issue 12 item 4).
    assert "numpy" not in {m.split(".")[0] for m in idle_pipeline_modules}


def test_the_idle_one_tag_pipeline_imports_no_polars(idle_pipeline_modules):
    # A Modbus round of one tag is a TagBatch (engine/tags.py): plain columns from the source
    # through the stream into the historian's VALUES insert, so Polars (~35 MB) is never imported
    # (issue 12 item 4: the idle one-tag pipeline < 100 MB). The list is taken after rows are stored.
    assert "polars" not in {m.split(".")[0] for m in idle_pipeline_modules}


def test_the_idle_one_tag_pipeline_polls_on_asyncios_loop(idle_pipeline_modules):
    # uvloop (~2 MB) is for busy sources (protocols/event_loop.py): one tag at 1 s is 1 request a
    # second, under FAST_LOOP_FROM.
    assert "uvloop" not in {m.split(".")[0] for m in idle_pipeline_modules}
