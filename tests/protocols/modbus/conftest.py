from __future__ import annotations

import logging

import pytest

from protocols.modbus.simulator import ModbusSimulator


@pytest.fixture(autouse=True)
def _quiet_pymodbus():
    # pymodbus logs every timeout and its datastore deprecation at WARNING/ERROR; the tests
    # provoke those on purpose.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@pytest.fixture
def sim():
    with ModbusSimulator(meters=2, frozen_at=1000.0) as simulator:
        yield simulator
