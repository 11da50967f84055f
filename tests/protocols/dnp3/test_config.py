"""The DNP3 source config: defaults, point mapping, one-line validation errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocols.dnp3.config import Dnp3Point, Dnp3SourceConfig, default_tag
from protocols.dnp3.connector import PointMap


def test_defaults():
    config = Dnp3SourceConfig()
    assert (config.port, config.master_address, config.outstation_address) == (20000, 1, 10)
    assert config.accept_unsolicited is True and config.points == []
    assert config.timeout_s == pytest.approx(3.0)
    # new keys beside the documented ones: nothing changes for an existing config
    assert (config.time_sync, config.timed_events, config.allow_controls) == ("none", False, False)
    assert (config.reconnect_initial_s, config.reconnect_max_s) == (0.5, 30.0)


def test_documented_config_keys_still_validate():
    config = Dnp3SourceConfig.model_validate(
        {
            "host": "10.0.4.20",
            "port": 20000,
            "master_address": 1,
            "outstation_address": 10,
            "integrity_poll_interval_s": 60,
            "event_poll_interval_s": 5,
            "accept_unsolicited": True,
            "timeout_ms": 3000,
            "reconnect_max_s": 30,
            "points": [
                {"type": "analog_input", "index": 0, "tag": "feeder1.kv", "scale": 0.001, "unit": "kV"}
            ],
        }
    )
    assert config.points[0].tag_name == "feeder1.kv"


@pytest.mark.parametrize(
    ("point_type", "index", "tag"),
    [
        ("binary_input", 0, "BI.0"),
        ("analog_input", 3, "AI.3"),
        ("counter", 1, "CTR.1"),
        ("binary_output_status", 2, "BO.2"),
        ("double_bit_binary", 4, "DBI.4"),
        ("frozen_counter", 5, "FCTR.5"),
        ("analog_output_status", 7, "AO.7"),
    ],
)
def test_default_tag_names(point_type, index, tag):
    assert default_tag(point_type, index) == tag
    assert Dnp3Point(type=point_type, index=index).tag_name == tag


def test_point_map_uses_configured_names_and_scales_and_remembers_every_tag():
    points = PointMap([Dnp3Point(type="analog_input", index=0, tag="feeder1.kv", scale=0.001, unit="kV")])
    assert points.tag("analog_input", 0) == ("feeder1.kv", 0.001)
    assert points.tag("analog_input", 1) == ("AI.1", 1.0)
    assert list(points.known) == ["feeder1.kv", "AI.1"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"points": [{"type": "counter", "index": 1}, {"type": "counter", "index": 1}]},
            "counter 1 is listed twice",
        ),
        (
            {
                "points": [
                    {"type": "counter", "index": 1, "tag": "x"},
                    {"type": "analog_input", "index": 1, "tag": "x"},
                ]
            },
            "tag 'x' is used twice",
        ),
        ({"points": [{"type": "double_bit", "index": 1}]}, "double_bit_binary"),
        ({"time_sync": "gps"}, "'none', 'lan' or 'non_lan'"),
        ({"reconnect_initial_s": 0}, "greater than 0"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"event_poll_interval_s": 0}, "greater than 0"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_say_what_is_wrong(config, message):
    with pytest.raises(ValidationError, match=message):
        Dnp3SourceConfig.model_validate(config)
