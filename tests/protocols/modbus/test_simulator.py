"""The simulator itself: its map is what the meters hold, faults change what a client sees."""

from __future__ import annotations

import pytest

from protocols.modbus.codec import decode_tag
from protocols.modbus.config import ModbusSourceConfig
from protocols.modbus.simulator import METER_MAP, ModbusSimulator, meter_tags, run_cli


def read(sim: ModbusSimulator, unit: int, address: int, count: int) -> list[int]:
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.5, retries=0)
    try:
        client.connect()
        return client.read_holding_registers(address, count=count, device_id=unit).registers
    finally:
        client.close()


def test_the_served_registers_decode_to_the_meter_values(sim):
    config = ModbusSourceConfig.model_validate(sim.connector_config())
    power = next(t for t in config.devices[0].tags if t.name == "power_kw")
    assert decode_tag(power, read(sim, 1, 0, 2)) == pytest.approx(sim.values(1)["power_kw"], rel=1e-6)
    assert [d.unit_id for d in config.devices] == [1, 2]


def test_flip_serves_byte_swapped_registers(sim):
    plain = read(sim, 2, 0, 4)
    sim.flip(unit=2)
    assert read(sim, 2, 0, 4) == [((w & 0xFF) << 8) | (w >> 8) for w in plain]
    sim.clear()
    assert read(sim, 2, 0, 4) == plain


def test_bulk_tags_extend_the_map():
    tags = meter_tags(100)
    assert len(tags) == 100 and tags[len(METER_MAP)]["address"] == 100


def test_run_cli_prints_endpoint_and_tag_count(capsys):
    run_cli(port=0, tags=50, seconds=0.2)
    line = capsys.readouterr().out
    assert "tcp://127.0.0.1:" in line and "200 tags" in line
