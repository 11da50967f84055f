"""The substation RTU simulator on its own: the wind-farm model, events, the CLI."""

from __future__ import annotations

import time

from protocols import windfarm
from protocols.dnp3.simulator import Dnp3Simulator, run_cli


def test_points_follow_the_wind_farm_model(sim):
    raw = sim.snapshot()
    assert len(raw) == sim.point_count == 16
    assert raw["binary_input", 0] == (float(windfarm.breaker_closed(100.0, 0)), 0x01)
    assert raw["analog_input", 1][0] == round(windfarm.feeder_voltage_kv(100.0, 1) * 1000)
    assert raw["analog_input", 4 + 2][0] == round(windfarm.meter_power_kw(100.0, 2))
    assert raw["counter", 3][0] == int(windfarm.meter_energy_kwh(100.0, 3))


def test_breaker_trip_makes_a_class_1_event(sim):
    sim.set_time(100.0)
    before = sim.pending_events()
    sim.set_time(30.0)  # feeder 0's breaker trips at t = 30 s past the hour
    assert sim.snapshot()["binary_input", 0][0] == 0.0
    assert sim.pending_events() > before


def test_running_clock_changes_values():
    with Dnp3Simulator(feeders=1, update_interval_s=0.05, start_t=0.0) as sim:
        first = sim.snapshot()["analog_input", 0]
        deadline = time.monotonic() + 5
        while sim.snapshot()["analog_input", 0] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.snapshot()["analog_input", 0] != first


def test_run_cli_prints_endpoint_and_point_count(capsys):
    run_cli(port=0, tags=10, seconds=0.2)
    out = capsys.readouterr().out
    assert "dnp3://127.0.0.1:" in out and "12 points (3 feeders)" in out
