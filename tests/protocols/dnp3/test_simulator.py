"""The substation RTU simulator on its own: the wind-farm model, controls, the CLI."""

from __future__ import annotations

import socket
import time

import pytest

from protocols import windfarm
from protocols.dnp3.simulator import DETERMINED_OFF, DETERMINED_ON, POINT_TYPES, Dnp3Simulator, run_cli

from .conftest import T0


def test_points_follow_the_wind_farm_model(sim):
    raw = sim.snapshot()
    n = sim.feeders
    assert len(raw) == sim.point_count == len(POINT_TYPES) * 2 * n == 28
    assert raw["binary_input", 0] == (float(windfarm.breaker_closed(T0, 0)), 0x01)
    assert raw["double_bit_binary", 0][0] == (
        DETERMINED_ON if windfarm.breaker_closed(T0, 0) else DETERMINED_OFF
    )
    assert raw["analog_input", 1][0] == round(windfarm.feeder_voltage_kv(T0, 1) * 1000)
    assert raw["analog_input", n + 1][0] == round(windfarm.meter_power_kw(T0, 1))
    assert raw["counter", 1][0] == int(windfarm.meter_energy_kwh(T0, 1))
    assert raw["frozen_counter", 1][0] == raw["counter", 1][0]
    assert {p.tag_name for p in sim.points()} >= {
        "substation.feeder2.power_mw",
        "substation.feeder1.breaker_position",
    }
    assert len(sim.points()) == sim.point_count


def test_breaker_trip_in_the_model_changes_the_points(sim):
    sim.set_time(30.0)  # feeder 0's breaker trips at t = 30 s past the hour
    raw = sim.snapshot()
    assert raw["binary_input", 0][0] == 0.0 and raw["double_bit_binary", 0][0] == DETERMINED_OFF


def test_running_clock_changes_values():
    with Dnp3Simulator(feeders=1, update_interval_s=0.05, start_t=0.0) as sim:
        first = sim.snapshot()["analog_input", 0]
        deadline = time.monotonic() + 5
        while sim.snapshot()["analog_input", 0] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.snapshot()["analog_input", 0] != first


def test_set_value_says_what_is_allowed(sim):
    with pytest.raises(ValueError, match="no point type 'coil' to set"):
        sim.set_value("coil", 0, 1)
    with pytest.raises(ValueError, match=r"allowed indexes 0\.\.3"):
        sim.set_value("analog_input", 4, 1)


def test_a_busy_port_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError) as info:
            Dnp3Simulator(port=port).start()
    assert str(info.value) == f"DNP3 simulator: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_run_cli_prints_endpoint_and_point_count(capsys):
    run_cli(port=0, tags=10, seconds=0.2)
    out = capsys.readouterr().out
    assert "dnp3://127.0.0.1:" in out and "14 points (1 feeders)" in out
