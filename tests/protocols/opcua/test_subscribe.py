"""Subscriptions: micro-batches of tag records, deadband, status-code quality."""

from __future__ import annotations

import polars as pl
import pytest

from engine.tags import TAG_SCHEMA


def _config(endpoint: str, **extra) -> dict:
    return {
        "endpoint": endpoint,
        "browse_root": "WindFarm",
        "publishing_interval_ms": 100,
        "sampling_interval_ms": 50,
        **extra,
    }


def test_values_arrive_as_tag_batches_with_both_timestamps(farm, recorder):
    with recorder(_config(farm.endpoint)) as rec:
        rec.wait_for(lambda: sum(b.height for b in rec.batches) >= 60)
        assert rec.source.state == "subscribed"
    assert rec.state_names()[:3] == ["connecting", "connected", "subscribed"]
    assert rec.state_names()[-1] == "stopped"
    assert all(batch.schema == TAG_SCHEMA for batch in rec.batches)
    frame = rec.frame()
    assert set(frame["tag"]) == {
        f"Turbine0{t}.{n}" for t in (1, 2, 3) for n in ("WindSpeed", "Power", "RotorRpm", "GearboxTemp")
    }
    assert frame["timestamp"].null_count() == 0 and frame["server_timestamp"].null_count() == 0
    assert frame["quality"].unique().to_list() == ["good"] and frame["reason"].null_count() == frame.height
    assert frame["source"].unique().to_list() == ["opcua"]
    # Micro-batches, never one frame per value; every value counted.
    assert len(rec.batches) < frame.height / 5
    assert rec.source.counters["notifications"] == frame.height
    # The simulator's wind speed is the shared model's (what the tests and the demo expect).
    from protocols import windfarm

    row = frame.filter(pl.col("tag") == "Turbine02.WindSpeed").row(-1, named=True)
    assert row["value"] == pytest.approx(windfarm.wind_speed(row["timestamp"].timestamp(), 1), abs=1e-6)


def test_absolute_deadband_reduces_notifications(farm, recorder):
    # Rotor speed changes by far less than 1000 rpm: after the first value the deadband stops it.
    plain, damped = (
        recorder(_config(farm.endpoint)),
        recorder(_config(farm.endpoint, deadband={"type": "absolute", "value": 1000.0}), name="damped"),
    )
    with plain, damped:
        plain.wait_for(lambda: plain.source.counters["notifications"] >= 12 * 8)
        damped.wait_for(lambda: damped.source.counters["notifications"] >= 12)
    assert damped.source.counters["notifications"] < plain.source.counters["notifications"] / 3
    assert damped.frame().group_by("tag").len()["len"].max() <= 2


def test_status_codes_map_to_quality_and_reason(farm, recorder):
    with recorder(_config(farm.endpoint)) as rec:
        rec.wait_for(lambda: rec.source.counters["notifications"] >= 12)
        try:
            farm.flip_quality("bad")
            rec.wait_for(lambda: (rec.frame()["quality"] == "bad").sum() >= 12)
            farm.flip_quality("uncertain")
            rec.wait_for(lambda: (rec.frame()["quality"] == "uncertain").sum() >= 12)
        finally:
            farm.flip_quality("good")
        rec.wait_for(lambda: rec.frame()["quality"][-1] == "good")
    frame = rec.frame()
    reasons = dict(frame.group_by("quality").agg(pl.col("reason").unique()).iter_rows())
    assert reasons["bad"] == ["BadNoCommunication"]
    assert reasons["uncertain"] == ["UncertainLastUsableValue"]
    assert reasons["good"] == [None]
    assert "comm_lost" not in frame["reason"].to_list()  # a bad value is not a lost link


def test_refused_nodes_are_bad_records_with_the_reason(farm, recorder):
    config = {
        "endpoint": farm.endpoint,
        "nodes": ["ns=2;s=Turbine01.Power", "ns=2;s=Nope"],
        "tag_name": "node_id",
    }
    with recorder(config) as rec:
        rec.wait_for(lambda: len(rec.frame()) and "ns=2;s=Nope" in rec.frame()["tag"].to_list())
    bad = rec.frame().filter(pl.col("tag") == "ns=2;s=Nope")
    assert bad["quality"].to_list() == ["bad"] and bad["reason"].to_list() == ["BadNodeIdUnknown"]
    assert rec.source.counters["errors"] == 1


def test_sample_gives_a_short_live_preview(farm):
    from engine.context import RunContext
    from protocols.opcua.connector import OpcUaSource

    frame = OpcUaSource(_config(farm.endpoint), RunContext()).sample(seconds=5, limit=20)
    assert frame.height == 20 and frame.schema == TAG_SCHEMA
