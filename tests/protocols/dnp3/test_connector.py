"""The DNP3 master source against a real dnp3py outstation (the substation RTU simulator)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.tags import TAG_SCHEMA
from protocols.dnp3.config import Dnp3SourceConfig
from protocols.dnp3.connector import Dnp3Connector, Dnp3Source
from protocols.dnp3.simulator import COMM_LOST, ONLINE, OVER_RANGE, RESTART

QUIET = {"integrity_poll_interval_s": 60.0, "event_poll_interval_s": 60.0, "accept_unsolicited": False}


def endpoint(sim) -> dict:
    return {"host": "127.0.0.1", "port": sim.port, "outstation_address": sim.address, "timeout_ms": 2000}


def full(frame: pl.DataFrame, n: int) -> bool:
    return frame.height >= n


def test_registered_as_dnp3():
    assert registry.get("dnp3") is Dnp3Connector
    assert "source" in Dnp3Connector.describe()["roles"]


def test_integrity_poll_returns_every_point_with_values_and_quality(sim, run_source):
    source, batches = run_source(**endpoint(sim), **QUIET, points=[p.model_dump() for p in sim.points()])
    batch = batches.wait(lambda f: full(f, sim.point_count))

    assert batch.schema == TAG_SCHEMA
    assert batch["source"].unique().to_list() == ["rtu"]
    assert (batch["quality"] == "good").all() and batch["reason"].is_null().all()
    values = dict(zip(batch["tag"], batch["value"], strict=True))
    raw = sim.model_values(sim.t)
    for point in sim.points():
        expected = raw[point.type, point.index] * (point.scale if point.type != "binary_input" else 1.0)
        assert values[point.tag_name] == pytest.approx(expected), point.tag_name
    assert values["substation.feeder1.voltage_kv"] == pytest.approx(33.0, abs=0.31)  # kV through scale
    assert source.counters["integrity_polls"] == 1


def test_unmapped_points_get_default_names(sim, run_source):
    _, batches = run_source(**endpoint(sim), **QUIET)
    batch = batches.wait(lambda f: full(f, sim.point_count))
    tags = set(batch["tag"])
    assert {"BI.0", "BI.3", "AI.0", "AI.7", "CTR.0", "CTR.3"} <= tags
    assert len(tags) == sim.point_count


def test_event_poll_returns_changed_points_only(sim, run_source):
    source, batches = run_source(**endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2})
    batches.wait(lambda f: full(f, sim.point_count))
    first = len(batches.frames)
    sim.set_value("binary_input", 2, 0)  # class 1
    sim.set_value("analog_input", 5, 1234)  # class 2
    sim.set_value("counter", 1, 99999)  # class 3

    events = batches.wait(lambda f: f.height > 0, after=first)
    assert dict(zip(events["tag"], events["value"], strict=True)) == {
        "BI.2": 0.0,
        "AI.5": 1234.0,
        "CTR.1": 99999.0,
    }
    assert source.counters["event_polls"] >= 1
    assert source.counters["events"] == 3


def test_unsolicited_responses_arrive_with_the_outstation_event_time(sim, run_source):
    source, batches = run_source(**endpoint(sim), **{**QUIET, "accept_unsolicited": True})
    batches.wait(lambda f: full(f, sim.point_count))
    batches.wait_state("subscribed")
    first = len(batches.frames)
    at = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    sim.set_value("counter", 2, 4242, at=at)

    batch = batches.wait(lambda f: "CTR.2" in f["tag"].to_list(), after=first)
    row = batch.filter(pl.col("tag") == "CTR.2").row(0, named=True)
    assert row["value"] == 4242.0 and row["quality"] == "good"
    assert row["timestamp"] == at  # the outstation's time (g22v5), not when we received it
    assert row["received_at"] > at
    assert source.counters["unsolicited"] >= 1
    assert source.counters["event_polls"] == 0  # nothing was polled: it came by itself
    assert sim.unsolicited_sent >= 1


@pytest.mark.parametrize(
    ("point_type", "index", "flags", "quality", "reason"),
    [
        ("analog_input", 0, ONLINE | OVER_RANGE, "uncertain", "over_range"),
        ("binary_input", 1, COMM_LOST, "bad", "comm_lost"),
        ("counter", 3, ONLINE | RESTART, "uncertain", "restart"),
        ("analog_input", 4, 0, "bad", "offline"),
    ],
)
def test_flags_map_to_quality(sim, run_source, point_type, index, flags, quality, reason):
    sim.set_flags(point_type, index, flags)
    _, batches = run_source(**endpoint(sim), **QUIET)
    batch = batches.wait(lambda f: full(f, sim.point_count))
    tag = {"analog_input": "AI", "binary_input": "BI", "counter": "CTR"}[point_type] + f".{index}"
    # An integrity poll reads classes 1, 2, 3 then 0: the point's events, then its static value.
    rows = batch.filter(pl.col("tag") == tag)
    assert rows.row(-1, named=True) | {"quality": quality, "reason": reason} == rows.row(-1, named=True)
    assert (rows["quality"] == quality).sum() == 2  # the flag change's event and the static value
    others = batch.filter(pl.col("tag") != tag)
    assert (others["quality"] == "good").all()


def test_outstation_restart_heals_with_gap_records(sim, run_source):
    source, batches = run_source(**endpoint(sim), **{**QUIET, "accept_unsolicited": True})
    batches.wait(lambda f: full(f, sim.point_count))
    batches.wait_state("subscribed")
    first = len(batches.frames)
    sim.restart()

    gap = batches.wait(lambda f: (f["reason"] == "comm_lost").all(), after=first)
    assert gap.height == sim.point_count and (gap["quality"] == "bad").all() and gap["value"].is_null().all()
    after_gap = batches.after(gap)
    healed = batches.wait(
        lambda f: full(f, sim.point_count) and (f["quality"] == "good").all(), after=after_gap
    )
    assert set(healed["tag"]) == set(gap["tag"])
    assert source.counters["reconnects"] >= 1 and source.counters["errors"] >= 1
    assert "lost" in batches.states and "reconnecting" in batches.states


def test_stalled_outstation_times_out_to_bad_quality_then_recovers(sim, run_source):
    config = {**endpoint(sim), **QUIET, "event_poll_interval_s": 0.2, "timeout_ms": 400}
    source, batches = run_source(**config)
    batches.wait(lambda f: full(f, sim.point_count))
    first = len(batches.frames)
    sim.stall()

    gap = batches.wait(lambda f: (f["reason"] == "timeout").all(), after=first)
    assert gap.height == sim.point_count and (gap["quality"] == "bad").all()
    assert source.state in ("lost", "reconnecting", "connecting", "connected")
    sim.resume()
    after_gap = batches.after(gap)
    batches.wait(lambda f: full(f, sim.point_count) and (f["quality"] == "good").all(), after=after_gap)
    assert source.counters["errors"] >= 1


def test_garbage_on_the_link_does_not_break_polling(sim, run_source):
    source, batches = run_source(**endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2})
    batches.wait(lambda f: full(f, sim.point_count))
    sim.garbage()
    first = len(batches.frames)
    sim.set_value("analog_input", 1, 777)
    batch = batches.wait(lambda f: "AI.1" in f["tag"].to_list(), after=first)
    assert batch.filter(pl.col("tag") == "AI.1")["value"].to_list()[-1] == 777.0
    # The frame parser resynchronises on the next frame start: no error, no reconnect.
    assert source.counters["errors"] == 0 and source.counters["reconnects"] == 0


def test_sample_gives_a_short_live_preview(sim):
    source = Dnp3Connector.make_source({**endpoint(sim), **QUIET}, RunContext(), "rtu")
    frame = source.sample(seconds=5, limit=5)
    assert frame.height == 5 and frame.schema == TAG_SCHEMA
    assert source.state == "stopped"


def test_check_succeeds_against_the_outstation(sim):
    Dnp3Source(Dnp3SourceConfig(**endpoint(sim)), RunContext()).check()


def test_check_fails_with_one_line_naming_the_endpoint(sim):
    port = sim.port
    sim.stop()
    source = Dnp3Source(Dnp3SourceConfig(host="127.0.0.1", port=port, timeout_ms=300), RunContext())
    with pytest.raises(ConnectorError) as info:
        source.check()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "outstation 10" in message and "\n" not in message


def test_check_works_from_inside_a_running_event_loop(sim):
    import asyncio

    async def from_loop() -> None:
        Dnp3Source(Dnp3SourceConfig(**endpoint(sim)), RunContext()).check()

    asyncio.run(from_loop())
