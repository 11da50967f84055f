"""The event loop a protocol source polls on (protocols/event_loop.py): uvloop's for a busy source,
asyncio's for a few requests a second, asyncio's when the environment says so; and a busy Modbus
source on uvloop reads the simulator's values as one on asyncio's loop does."""

from __future__ import annotations

import asyncio

import polars as pl
import pytest

from protocols import event_loop
from protocols.modbus.config import ModbusSourceConfig
from protocols.modbus.planner import plan_requests
from protocols.modbus.simulator import ModbusSimulator
from tests.protocols.modbus.test_connector import make_source, run


def test_a_busy_source_gets_uvloop_a_quiet_one_asyncios_loop(monkeypatch):
    monkeypatch.delenv(event_loop.ENV, raising=False)
    busy = event_loop.new_event_loop(event_loop.FAST_LOOP_FROM)
    quiet = event_loop.new_event_loop(event_loop.FAST_LOOP_FROM - 1)
    try:
        assert event_loop.is_fast(busy) and type(busy).__module__ == "uvloop"
        assert not event_loop.is_fast(quiet) and isinstance(quiet, asyncio.BaseEventLoop)
    finally:
        busy.close()
        quiet.close()


def test_the_environment_can_rule_uvloop_out(monkeypatch):
    monkeypatch.setenv(event_loop.ENV, " AsyncIO ")
    loop = event_loop.new_event_loop(10 * event_loop.FAST_LOOP_FROM)
    try:
        assert not event_loop.is_fast(loop)
    finally:
        loop.close()


def rounds(sim: ModbusSimulator, monkeypatch, loop: str | None) -> tuple[bool, pl.DataFrame]:
    """Two rounds of every meter at 100 ms on the loop the source chooses (`loop`: the env's word)."""
    if loop is None:
        monkeypatch.delenv(event_loop.ENV, raising=False)
    else:
        monkeypatch.setenv(event_loop.ENV, loop)
    source = make_source(sim.connector_config(poll_interval_ms=100))
    fast: list[bool] = []
    original = source.start

    def start(emit):
        original(emit)
        fast.append(event_loop.is_fast(source._loop))

    source.start = start
    meters = len(sim.unit_ids)
    out = run(source, 20, until=lambda o: sum(b.height for b in o.batches) >= 2 * meters * sim.tags_per_meter)
    return fast[0], out.frame()


def test_a_busy_modbus_source_on_uvloop_reads_what_asyncios_loop_reads(monkeypatch):
    with ModbusSimulator(meters=4, tags_per_meter=1000, frozen_at=1000.0) as sim:
        device = ModbusSourceConfig.model_validate(sim.connector_config(poll_interval_ms=100)).devices[0]
        per_s = len(sim.unit_ids) * len(plan_requests(device)) / 0.1
        assert per_s >= event_loop.FAST_LOOP_FROM  # the source below is busy enough
        fast, on_uvloop = rounds(sim, monkeypatch, None)
        slow, on_asyncio = rounds(sim, monkeypatch, "asyncio")
    assert fast and not slow

    def values(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.unique("tag", keep="first").select("tag", "value", "quality").sort("tag")

    got, expected = values(on_uvloop), values(on_asyncio)
    assert got.height == 4 * 1000 and set(got["quality"]) == {"good"}
    assert got.equals(expected)


def planned_source(config: dict):
    """A Modbus source with its devices' pollers (their request plans) made, as start() makes them."""
    from protocols.modbus.connector import DevicePoller

    source = make_source(config)
    source._pollers = [DevicePoller(d, source) for d in source.config.devices]
    return source


def test_a_serial_device_keeps_asyncios_loop():
    config = {
        "devices": [
            {
                "name": "line",
                "transport": "rtu",
                "serial_port": "/dev/ttyS9",
                "unit_id": 1,
                "poll_interval_ms": 10,
                "tags": [{"name": f"t{i}", "table": "holding", "address": 200 * i} for i in range(50)],
            }
        ]
    }
    source = planned_source(config)
    assert len(source._pollers[0].requests) == 50  # 5,000 a second, were it TCP
    assert source.requests_per_s() == 0.0


@pytest.mark.parametrize("interval_ms, expected", [(1000, 1.0), (100, 10.0)])
def test_a_sources_requests_a_second_come_from_its_plan(interval_ms, expected):
    config = {
        "devices": [
            {
                "name": "plc",
                "host": "127.0.0.1",
                "port": 1502,
                "unit_id": 1,
                "poll_interval_ms": interval_ms,
                "tags": [{"name": "t", "table": "holding", "address": 0}],
            }
        ]
    }
    source = planned_source(config)
    assert source.requests_per_s() == pytest.approx(expected)
