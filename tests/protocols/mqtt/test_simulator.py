"""The Sparkplug B wind-farm simulator, read back through the sparkplug_b source via Mosquitto."""

from __future__ import annotations

import uuid

import polars as pl
import pytest

from protocols import windfarm
from protocols.mqtt.simulator import SparkplugSimulator, run_cli, simulator_config
from tests.conftest import require_service
from tests.protocols.mqtt.test_source import make_source

pytestmark = pytest.mark.services


@pytest.fixture
def group():
    require_service("mosquitto")
    return f"WF-{uuid.uuid4().hex[:8]}"


def test_turbines_arrive_by_name_and_a_killed_link_gives_gaps(group):
    source, got = make_source("sparkplug_b", simulator_config(group))
    source.start(got.emit)
    got.wait(lambda c: "subscribed" in c.states)
    sim = SparkplugSimulator(group=group, turbines=2, tags=5, interval_s=0.1)
    sim.start()
    try:
        prefix = f"{group}/Gateway1"
        power = f"{prefix}/Turbine02/Power"
        got.wait(
            lambda c: c.frame.filter((pl.col("tag") == power) & pl.col("value").is_not_null()).height >= 3
        )
        sim.kill()
        got.wait(lambda c: c.frame.filter(pl.col("reason") == "comm_lost").height >= sim.tag_count + 1)
        # The node comes back by itself with a new birth and data flows again.
        got.wait(
            lambda c: c.frame.filter(pl.col("tag") == f"{prefix}/bdSeq")["value"].to_list()[-1:] == [1.0]
        )
    finally:
        sim.stop()
        source.stop()
    frame = got.frame
    tags = set(frame["tag"])
    assert {
        f"{prefix}/Turbine01/{n}" for n in ("WindSpeed", "Power", "RotorRpm", "GearboxTemp", "Aux05")
    } <= tags
    assert f"{prefix}/MetMast/WindSpeed" in tags
    assert not frame.filter(pl.col("tag").str.contains("alias_")).height  # every alias was born
    good = frame.filter((pl.col("tag") == power) & (pl.col("quality") == "good"))
    for ts, value in good.select("timestamp", "value").rows():
        assert value == windfarm.turbine_power_kw(ts.timestamp(), 1)
    gaps = frame.filter(pl.col("reason") == "comm_lost")
    assert {f"{prefix}/Turbine01/Power", f"{prefix}/bdSeq"} <= set(gaps["tag"])
    assert (
        source.counters["deaths"] >= 1 and source.counters["births"] >= 3 + 1
    )  # node + 2 devices, then the rebirth


def test_run_cli_publishes_for_the_given_time(group, capsys):
    run_cli(port=1883, tags=4, seconds=0.3)
    assert "sparkplug simulator: mqtt://127.0.0.1:1883" in capsys.readouterr().out
