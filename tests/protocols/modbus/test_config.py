"""Config validation: each mistake is one clear message naming the device or tag."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocols.modbus.config import ModbusSourceConfig


def config(tags=None, **device):
    return {
        "devices": [{"name": "meter1", "port": 5020, "tags": tags or [{"name": "p", "address": 0}], **device}]
    }


def error_of(data) -> str:
    with pytest.raises(ValidationError) as info:
        ModbusSourceConfig.model_validate(data)
    return str(info.value)


def test_a_valid_config_with_defaults():
    cfg = ModbusSourceConfig.model_validate(config())
    device = cfg.devices[0]
    assert (device.max_gap, device.max_registers_per_request, device.max_bits_per_request) == (10, 125, 2000)
    assert device.tags[0].type == "uint16" and device.tags[0].table == "holding"
    assert device.endpoint == "127.0.0.1:5020 unit 1"


@pytest.mark.parametrize(
    ("tag", "needle"),
    [
        (
            {"name": "kw", "table": "coil", "address": 3, "type": "float32"},
            "tag 'kw' (coil 3): type 'float32' cannot",
        ),
        (
            {"name": "on", "table": "holding", "address": 3, "type": "bool"},
            "tag 'on' (holding 3): type 'bool' is for",
        ),
        ({"name": "b", "address": 3, "type": "bit"}, "tag 'b' (holding 3): type 'bit' needs `bit`"),
        ({"name": "b", "address": 3, "type": "bit", "bit": 16}, "less than or equal to 15"),
        ({"name": "s", "address": 3, "type": "string"}, "tag 's' (holding 3): type 'string' needs `length`"),
        ({"name": "x", "address": 3, "length": 2}, "`length` is only for type 'string'"),
        ({"name": "x", "address": 65535, "type": "float32"}, "run past address 65535"),
        ({"name": "x", "address": 1, "type": "int64"}, "'float64' or 'string'"),
    ],
)
def test_bad_tags_are_named(tag, needle):
    assert needle in error_of(config([tag]))


def test_duplicate_tag_and_device_names():
    assert "tag name 'p' is used twice" in error_of(
        config([{"name": "p", "address": 0}, {"name": "p", "address": 1}])
    )
    data = config()
    data["devices"].append(dict(data["devices"][0]))
    assert "device names must be unique: meter1" in error_of(data)


def test_rtu_needs_a_serial_port_and_strings_fit_a_request():
    assert "device 'meter1': transport 'rtu' needs `serial_port`" in error_of(config(transport="rtu"))
    tags = [{"name": "s", "address": 0, "type": "string", "length": 20}]
    assert "exceed max_registers_per_request (10)" in error_of(config(tags, max_registers_per_request=10))


def test_limits_of_the_protocol():
    assert "less than or equal to 125" in error_of(config(max_registers_per_request=126))
    assert "less than or equal to 2000" in error_of(config(max_bits_per_request=2001))
    assert "Extra inputs are not permitted" in error_of(config(colour="red"))
