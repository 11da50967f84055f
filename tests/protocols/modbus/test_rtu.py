"""Modbus RTU over a serial line: a pair of linked pseudo-terminals (socat), the simulator's
pymodbus serial server on one end and the connector on the other."""

from __future__ import annotations

import shutil
import subprocess
import time

import polars as pl
import pytest

from protocols.modbus.simulator import ModbusSimulator, simulator_config
from tests.protocols.modbus.test_connector import make_source, run


@pytest.fixture
def serial_pair(tmp_path):
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (needed for a pseudo-terminal pair)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"])
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
    yield str(a), str(b)
    proc.terminate()
    proc.wait(5)


def test_rtu_devices_share_the_line_and_decode(serial_pair):
    server_end, client_end = serial_pair
    with ModbusSimulator(meters=2, frozen_at=1000.0, serial_port=server_end, baudrate=115200) as sim:
        config = simulator_config([("", 0, unit) for unit in sim.unit_ids], poll_interval_ms=200)
        for device in config["devices"]:
            device.update(transport="rtu", serial_port=client_end, baudrate=115200, timeout_ms=500)
        source = make_source(config)
        out = run(source, 8, until=lambda o: len(o.batches) >= 4)
    frame = out.frame()
    for meter, unit in ((1, 1), (2, 2)):
        rows = frame.filter(pl.col("tag") == f"meter{meter}.serial")
        assert rows["value_text"].to_list()[0] == sim.values(unit)["serial"]
    assert set(frame["quality"]) == {"good"}
