"""The DNP3 master source (opendnp3) against the substation RTU simulator (an opendnp3 outstation)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.tags import LEAN_ROWS, TAG_SCHEMA, as_frame
from protocols.dnp3 import connector as dnp3_connector
from protocols.dnp3.config import Dnp3SourceConfig
from protocols.dnp3.connector import Dnp3Connector, Dnp3Source
from protocols.dnp3.simulator import COMM_LOST, ONLINE, OVER_RANGE, RESTART, Dnp3Simulator
from tests.children import last_line
from tests.net import free_port

from .conftest import T0, wait_for

QUIET = {"integrity_poll_interval_s": 60.0, "event_poll_interval_s": 60.0, "accept_unsolicited": False}


def endpoint(sim) -> dict:
    return {"host": "127.0.0.1", "port": sim.port, "outstation_address": sim.address, "timeout_ms": 2000}


STATIC = pl.col(
    "timestamp"
).is_not_null()  # static values are stamped at the poll; events without time are not


def wait_static(batches, sim, after: int = 0, timeout: float = 10.0) -> pl.DataFrame:
    """The static part of the next integrity poll: every point once (its events come before)."""
    frame = batches.wait(lambda f: f.filter(STATIC).height >= sim.point_count, timeout, after)
    return frame.filter(STATIC)


def wait_polling(batches, sim) -> pl.DataFrame:
    """The start-up integrity poll, and the start-up done (unsolicited reporting taken back)."""
    static = wait_static(batches, sim)
    batches.wait_state("connected", detail="polling (unsolicited off)")
    return static


def test_registered_as_dnp3():
    assert registry.get("dnp3") is Dnp3Connector
    assert "source" in Dnp3Connector.describe()["roles"]


def test_integrity_poll_returns_every_point_type_with_values_and_quality(sim, run_source):
    source, batches = run_source(**endpoint(sim), **QUIET, points=[p.model_dump() for p in sim.points()])
    batch = wait_static(batches, sim)

    assert batch.schema == TAG_SCHEMA
    assert batch["source"].unique().to_list() == ["rtu"]
    assert (batch["quality"] == "good").all() and batch["reason"].is_null().all()
    values = dict(zip(batch["tag"], batch["value"], strict=True))
    raw = {key: value for key, (value, _) in sim.snapshot().items()}
    for point in sim.points():  # binaries, double-bit binaries, analogs, counters, frozen counters, outputs
        expected = raw[point.type, point.index] * point.scale
        assert values[point.tag_name] == pytest.approx(expected), point.tag_name
    assert values["substation.feeder1.voltage_kv"] == pytest.approx(33.0, abs=0.31)  # kV through scale
    assert values["substation.feeder1.breaker_position"] in (1.0, 2.0)  # double-bit: off or on
    assert values["substation.feeder2.energy_kwh_frozen"] == raw["counter", 1]  # frozen at start
    # A static value has no time of its own: it is true at the poll, like a Modbus register.
    assert (batch["timestamp"] == batch["received_at"]).all()
    # the poll is counted when opendnp3 reports its task done, just after its data is handed over
    wait_for(lambda: source.counters["integrity_polls"] >= 1, what="the start-up poll counted")
    assert source.counters["integrity_polls"] == 1


def test_unmapped_points_get_default_names(sim, run_source):
    _, batches = run_source(**endpoint(sim), **QUIET)
    batch = wait_static(batches, sim)
    tags = set(batch["tag"])
    assert {"BI.0", "DBI.3", "AI.0", "AI.3", "CTR.0", "FCTR.3", "BO.1", "AO.2"} <= tags
    assert len(tags) == sim.point_count


def test_event_poll_returns_changed_points_only(sim, run_source):
    source, batches = run_source(**endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2})
    wait_polling(batches, sim)
    first = len(batches.frames)
    sim.set_value("binary_input", 2, 1)
    sim.set_value("analog_input", 3, 1234)
    sim.set_value("counter", 1, 99999)
    sim.set_value("double_bit_binary", 1, 3)  # indeterminate

    events = batches.wait(lambda f: f.height >= 4, after=first)
    assert dict(zip(events["tag"], events["value"], strict=True)) == {
        "BI.2": 1.0,
        "AI.3": 1234.0,
        "CTR.1": 99999.0,
        "DBI.1": 3.0,
    }
    # opendnp3's default event variations (g2v1, g32v1...) carry no time: null, never 1970
    assert events["timestamp"].is_null().all() and events["received_at"].is_not_null().all()
    assert source.counters["event_polls"] >= 1 and source.counters["events"] >= 4


def test_timed_event_polls_carry_the_outstation_event_time(sim, run_source):
    _, batches = run_source(**endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2, "timed_events": True})
    wait_polling(batches, sim)
    first = len(batches.frames)
    at = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    sim.set_value("analog_input", 1, 4242, at=at)
    sim.set_value("binary_input", 0, 0, at=at + timedelta(seconds=1))

    rows = batches.wait_rows(pl.col("tag") == "AI.1", after=first)
    assert rows.row(-1, named=True)["value"] == 4242.0
    assert rows.row(-1, named=True)["timestamp"] == at  # g32v3: the outstation's time, not receipt
    rows = batches.wait_rows(pl.col("tag") == "BI.0", after=first)
    assert rows.row(-1, named=True)["timestamp"] == at + timedelta(seconds=1)  # g2v2


def test_a_zero_event_time_is_stored_as_null_not_1970(sim, run_source):
    _, batches = run_source(**endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2, "timed_events": True})
    wait_polling(batches, sim)
    first = len(batches.frames)
    sim.set_value("analog_input", 2, 555, at=datetime(1970, 1, 1, tzinfo=UTC))  # g32v3 with time 0

    rows = batches.wait_rows(pl.col("tag") == "AI.2", after=first)
    row = rows.row(-1, named=True)
    assert row["value"] == 555.0 and row["timestamp"] is None and row["received_at"] is not None


def test_unsolicited_responses_arrive_without_polling(sim, run_source):
    source, batches = run_source(**endpoint(sim), **{**QUIET, "accept_unsolicited": True})
    wait_static(batches, sim)
    batches.wait_state("subscribed")
    first = len(batches.frames)
    sim.set_value("counter", 2, 4242)

    rows = batches.wait_rows(pl.col("tag") == "CTR.2", after=first)
    row = rows.row(0, named=True)
    assert row["value"] == 4242.0 and row["quality"] == "good"
    assert row["timestamp"] is None and row["received_at"] is not None  # g22v1 has no time
    assert source.counters["unsolicited"] >= 1
    assert source.counters["event_polls"] == 0  # nothing was polled: it came by itself


def test_without_accept_unsolicited_changes_come_by_polls_only(sim, run_source):
    source, batches = run_source(**endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.3})
    wait_polling(batches, sim)
    first = len(batches.frames)
    sim.set_value("counter", 2, 4243)
    batches.wait_rows(pl.col("tag") == "CTR.2", after=first)
    # opendnp3 enables unsolicited reporting at start-up; the source takes it back at once
    assert source.counters["unsolicited"] == 0 and source.counters["event_polls"] >= 1
    assert "subscribed" not in [state for state, _ in batches.states]


@pytest.mark.parametrize(
    ("point_type", "index", "flags", "quality", "reason"),
    [
        ("analog_input", 0, ONLINE | OVER_RANGE, "uncertain", "over_range"),
        ("binary_input", 1, COMM_LOST, "bad", "comm_lost"),
        ("counter", 3, ONLINE | RESTART, "uncertain", "restart"),
        ("analog_input", 2, 0, "bad", "offline"),
        ("double_bit_binary", 0, ONLINE | COMM_LOST, "bad", "comm_lost"),
    ],
)
def test_flags_map_to_quality(sim, run_source, point_type, index, flags, quality, reason):
    sim.set_flags(point_type, index, flags)
    _, batches = run_source(**endpoint(sim), **QUIET)
    batch = wait_static(batches, sim)
    prefix = {"analog_input": "AI", "binary_input": "BI", "counter": "CTR", "double_bit_binary": "DBI"}
    row = batch.filter(pl.col("tag") == f"{prefix[point_type]}.{index}").row(0, named=True)
    assert (row["quality"], row["reason"]) == (quality, reason)
    others = batch.filter(pl.col("tag") != f"{prefix[point_type]}.{index}")
    assert (others["quality"] == "good").all()


def test_frozen_counters_follow_a_freeze(sim, run_source):
    _, batches = run_source(**endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2})
    wait_polling(batches, sim)
    first = len(batches.frames)
    sim.set_value("counter", 0, 5000)
    sim.freeze_counters()
    rows = batches.wait_rows(pl.col("tag") == "FCTR.0", after=first)
    assert rows["value"].to_list()[-1] == 5000.0


def test_outstation_down_at_start_is_visible_then_it_comes_up(run_source):
    port = free_port()
    config = {"host": "127.0.0.1", "port": port, "timeout_ms": 1000, "reconnect_max_s": 1.0, **QUIET}
    source, batches = run_source(**config)
    began = time.monotonic()
    detail = batches.wait_state("lost", timeout=5)
    assert time.monotonic() - began < 5
    assert detail == f"dnp3://127.0.0.1:{port} (outstation 10): connection refused; retrying in 0.5 s"
    assert source.state in ("lost", "connecting")
    # while the next attempt runs, the detail still says why the last one failed
    assert batches.wait_state("connecting", detail="connection refused; trying again", timeout=5)

    with Dnp3Simulator(port=port, feeders=1, update_interval_s=None, start_t=T0) as rtu:
        batches.wait(lambda f: f.height >= rtu.point_count and (f["quality"] == "good").all(), timeout=10)
        wait_for(lambda: source.state == "connected", what="connected")
    assert source.counters["errors"] >= 1


def test_outstation_restart_heals_with_gap_records(sim, run_source):
    source, batches = run_source(
        **endpoint(sim),
        **{**QUIET, "accept_unsolicited": True},
        points=[p.model_dump() for p in sim.points()],
    )
    wait_static(batches, sim)
    batches.wait_state("subscribed")
    first = len(batches.frames)
    sim.restart()

    gap = batches.wait(lambda f: (f["reason"] == "comm_lost").all(), after=first)
    assert gap.height == sim.point_count and (gap["quality"] == "bad").all() and gap["value"].is_null().all()
    detail = batches.wait_state("lost")
    assert detail.startswith(f"dnp3://127.0.0.1:{sim.port} (outstation 10): ") and "retrying in" in detail
    healed = wait_static(batches, sim, after=batches.after(gap))
    assert set(healed["tag"]) == set(gap["tag"]) and (healed["quality"] == "good").all()
    wait_for(lambda: source.counters["reconnects"] >= 1, what="a reconnect")
    assert [s for s, _ in batches.states].count("reconnecting") >= 1


def test_outstation_offline_for_a_while_then_back(sim, run_source):
    """The outstation stops listening mid-run: refused attempts with backoff, one gap, healing."""
    config = {**endpoint(sim), **QUIET, "reconnect_max_s": 1.0}
    source, batches = run_source(**config, points=[p.model_dump() for p in sim.points()])
    wait_static(batches, sim)
    first = len(batches.frames)
    sim.go_offline()

    detail = batches.wait_state("lost", detail="connection refused", timeout=5)
    assert detail.startswith(f"dnp3://127.0.0.1:{sim.port} (outstation 10): connection refused; retrying in")
    batches.wait_state("lost", detail="connection refused; retrying in 1 s", timeout=5)  # a later attempt
    gaps = [f for f in batches.frames[first:] if (f["quality"] == "bad").all()]
    assert len(gaps) == 1 and gaps[0].height == sim.point_count  # once per loss, not per attempt
    sim.come_back()
    healed = wait_static(batches, sim, after=batches.after(gaps[0]))
    assert (healed["quality"] == "good").all()
    wait_for(lambda: source.state == "connected" and source.counters["reconnects"] == 1, what="reconnected")


def test_stalled_outstation_times_out_to_bad_quality_then_recovers(sim, proxy, run_source):
    config = {**endpoint(sim), "port": proxy.port, **QUIET, "event_poll_interval_s": 0.2, "timeout_ms": 400}
    source, batches = run_source(**config)
    wait_static(batches, sim)
    first = len(batches.frames)
    proxy.stall()

    gap = batches.wait(lambda f: (f["reason"] == "timeout").all(), after=first)
    assert gap.height == sim.point_count and (gap["quality"] == "bad").all()
    assert "no response within 400 ms" in batches.wait_state("lost")
    proxy.resume()
    wait_static(batches, sim, after=batches.after(gap))
    assert source.counters["timeouts"] >= 1


def test_garbage_on_the_link_does_not_stop_the_values(sim, proxy, run_source):
    config = {**endpoint(sim), "port": proxy.port, **QUIET, "event_poll_interval_s": 0.2}
    source, batches = run_source(**config)
    wait_polling(batches, sim)
    proxy.garbage()
    first = len(batches.frames)
    sim.set_value("analog_input", 1, 777)
    rows = batches.wait_rows(pl.col("tag") == "AI.1", after=first, timeout=15)
    assert rows["value"].to_list()[-1] == 777.0
    assert source.state in ("connected", "subscribed")


def test_time_sync_is_observed_at_the_outstation(sim, run_source):
    assert sim.need_time and not sim.time_syncs
    source, batches = run_source(**endpoint(sim), **QUIET, time_sync="lan")
    wait_static(batches, sim)
    wait_for(lambda: sim.time_syncs, what="a time sync at the outstation")
    assert not sim.need_time  # IIN1.4 cleared
    assert abs((sim.time_syncs[0] - datetime.now(UTC)).total_seconds()) < 5
    assert abs((sim.clock - datetime.now(UTC)).total_seconds()) < 5
    wait_for(lambda: source.counters["time_syncs"] >= 1, what="the master counting it")


def test_without_time_sync_the_outstation_clock_is_left_alone(sim, run_source):
    source, batches = run_source(**endpoint(sim), **QUIET)
    wait_static(batches, sim)
    wait_for(lambda: source.counters["integrity_polls"] >= 1, what="the startup poll")
    assert sim.need_time and not sim.time_syncs and source.counters["time_syncs"] == 0


def test_crob_select_before_operate_trips_a_breaker(sim, run_source):
    source, batches = run_source(
        **endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2}, allow_controls=True
    )
    wait_polling(batches, sim)
    assert sim.snapshot()["binary_input", 0][0] == 1.0
    first = len(batches.frames)

    result = source.operate_binary(0, "trip", who="operator jane")
    assert result.ok and result.summary == "SUCCESS" and result.status == "SUCCESS"
    assert result.mode == "select_before_operate" and result.who == "operator jane"
    assert (
        sim.controls[-1] | {"index": 0, "mode": "SelectBeforeOperate", "tcc": "TRIP", "status": "SUCCESS"}
        == (sim.controls[-1])
    )
    # the trip reaches the master as events: the breaker open, its double-bit determined off
    assert batches.wait_rows(pl.col("tag") == "BI.0", after=first)["value"].to_list()[-1] == 0.0
    assert batches.wait_rows(pl.col("tag") == "DBI.0", after=first)["value"].to_list()[-1] == 1.0
    assert source.counters["controls"] == 1


def test_crob_direct_operate_and_analog_output(sim, run_source, caplog):
    source, batches = run_source(
        **endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2}, allow_controls=True
    )
    wait_polling(batches, sim)
    first = len(batches.frames)
    caplog.set_level(logging.INFO, logger="protocols.dnp3.connector")

    closed = source.operate_binary(2, "latch_on", who="scheduler", mode="direct_operate")
    limit = source.operate_analog(1, 7500, who="scheduler", mode="direct_operate")
    assert closed.ok and limit.ok
    assert [c["mode"] for c in sim.controls[-2:]] == ["DirectOperate", "DirectOperate"]
    rows = batches.wait_rows(pl.col("tag") == "AO.1", after=first)
    assert rows["value"].to_list()[-1] == 7500.0  # the RTU applied it to its analog output status
    rows = batches.wait_rows(pl.col("tag") == "BI.2", after=first)
    assert rows["value"].to_list()[-1] == 1.0
    logged = [r.getMessage() for r in caplog.records if "DNP3 control" in r.getMessage()]
    assert any("by scheduler" in line and "analog output 7500" in line and "ok" in line for line in logged)


def test_control_on_a_point_the_outstation_lacks_reports_its_status(sim, run_source):
    source, batches = run_source(**endpoint(sim), **QUIET, allow_controls=True)
    wait_static(batches, sim)
    result = source.operate_binary(99, "latch_on", who="tester")
    assert not result.ok and result.status != "SUCCESS"
    assert source.counters["controls_failed"] == 1


def test_controls_are_refused_unless_allowed(sim, run_source):
    source, batches = run_source(**endpoint(sim), **QUIET)
    wait_static(batches, sim)
    with pytest.raises(ConnectorError, match="allow_controls"):
        source.operate_binary(0, "trip", who="tester")
    assert sim.controls == []


def test_a_bad_item_is_counted_and_the_others_flow(sim, run_source, monkeypatch):
    real = dnp3_connector.dnp3_flags.quality_of

    def broken(point_type: str, flags: int):
        if point_type == "counter":
            raise ValueError("corrupt flag table")
        return real(point_type, flags)

    monkeypatch.setattr(dnp3_connector.dnp3_flags, "quality_of", broken)
    logged: list[str] = []
    ctx = RunContext(log=lambda level, msg, node=None: logged.append(msg))
    source, batches = run_source(ctx=ctx, **endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2})
    batch = batches.wait(lambda f: f.filter(STATIC).height >= sim.point_count - sim.per_type).filter(STATIC)
    assert not batch["tag"].str.starts_with("CTR.").any() and batch["tag"].str.starts_with("AI.").any()
    assert source.counters["item_errors"] >= 1
    assert any("counter" in line and "corrupt flag table" in line for line in logged)
    first = len(batches.frames)
    sim.set_value("analog_input", 0, 31000)  # the stack is alive: the next poll still delivers
    batches.wait_rows(pl.col("tag") == "AI.0", after=first)


def test_a_failing_consumer_does_not_stop_the_source(sim, run_source):
    seen: list[pl.DataFrame] = []

    def emit(batch) -> None:
        seen.append(as_frame(batch))
        if len(seen) == 1:
            raise RuntimeError("disk hiccup")

    source, _ = run_source(emit=emit, **endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2})
    wait_for(lambda: len(seen) >= 1, what="the first batch")
    sim.set_value("analog_input", 0, 31001)
    wait_for(lambda: any("AI.0" in f["tag"].to_list() for f in seen[1:]), what="a later batch")
    assert source.counters["item_errors"] >= 1


def test_opendnp3_logs_to_python_logging_at_debug_not_the_console(run_source, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="protocols.dnp3.opendnp3")
    port = free_port()
    _, batches = run_source(host="127.0.0.1", port=port, timeout_ms=500, **QUIET)
    batches.wait_state("lost", timeout=5)
    lines = [r for r in caplog.records if r.name == "protocols.dnp3.opendnp3"]
    assert any("Connection refused" in r.getMessage() for r in lines)
    assert {r.levelno for r in lines} == {logging.DEBUG}
    out, err = capfd.readouterr()
    assert "Connection refused" not in out + err


def test_sample_gives_a_short_live_preview(sim):
    source = Dnp3Connector.make_source({**endpoint(sim), **QUIET}, RunContext(), "rtu")
    frame = source.sample(seconds=5, limit=5)
    assert frame.height == 5 and frame.schema == TAG_SCHEMA
    assert source.state == "stopped"


def test_check_succeeds_against_the_outstation(sim):
    Dnp3Source(Dnp3SourceConfig(**endpoint(sim)), RunContext()).check()


def test_check_fails_with_one_line_naming_the_endpoint():
    port = free_port()
    source = Dnp3Source(Dnp3SourceConfig(host="127.0.0.1", port=port, timeout_ms=300), RunContext())
    with pytest.raises(ConnectorError) as info:
        source.check()
    message = str(info.value)
    assert message == f"dnp3://127.0.0.1:{port} (outstation 10): integrity poll failed: connection refused"


def test_check_works_from_inside_a_running_event_loop(sim):
    import asyncio

    async def from_loop() -> None:
        Dnp3Source(Dnp3SourceConfig(**endpoint(sim)), RunContext()).check()

    asyncio.run(from_loop())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (("analog", 0, 70000, "int16"), "value 70000 is out of range for int16: allowed -32768..32767"),
        (("analog", 0, 7.5, "int32"), "value 7.5 is not a whole number (int32)"),
        (("analog", 0, float("nan"), "int32"), "value nan is not a finite number"),
        (("analog", 0, float("inf"), "double64"), "value inf is not a finite number"),
        (("analog", 0, 1e300, "float32"), "value 1e+300 is out of range for float32"),
        (("analog", 70000, 1.0, "float32"), "output index 70000: allowed 0..65535"),
        (("binary", -1, {}), "output index -1: allowed 0..65535"),
        (("binary", 0, {"count": 300}), "count 300: allowed 0..255"),
        (("binary", 0, {"on_time_ms": -5}), "on_time_ms -5: allowed 0..4294967295"),
    ],
)
def test_a_control_the_protocol_cannot_carry_is_one_line_and_nothing_is_sent(sim, run_source, call, message):
    """Before: pybind's many-line TypeError, a NaN's ValueError, and 1e300 sent as float32 +inf
    (the RTU applied an infinite set point)."""
    logged: list[str] = []
    ctx = RunContext(log=lambda level, msg, node=None: logged.append(msg))
    source, batches = run_source(ctx=ctx, **endpoint(sim), **QUIET, allow_controls=True)
    wait_static(batches, sim)
    with pytest.raises(ConnectorError) as info:
        if call[0] == "analog":
            source.operate_analog(call[1], call[2], who="tester", variation=call[3])
        else:
            source.operate_binary(call[1], "trip", who="tester", **call[2])
    text = str(info.value)
    assert text.startswith(f"dnp3://127.0.0.1:{sim.port} (outstation 10): ") and message in text
    assert "\n" not in text
    assert any("refused" in line and message in line for line in logged)
    assert sim.controls == [] and source.counters["controls"] == 0


def test_a_control_without_a_session_is_not_sent(sim, run_source):
    logged: list[str] = []
    ctx = RunContext(log=lambda level, msg, node=None: logged.append(msg))
    source, batches = run_source(
        ctx=ctx, **endpoint(sim), **QUIET, allow_controls=True, reconnect_initial_s=5, reconnect_max_s=5
    )
    wait_static(batches, sim)
    sim.go_offline()
    batches.wait_state("lost", detail="connection refused", timeout=10)
    with pytest.raises(ConnectorError, match=r"not connected; CROB trip on output 0 not sent$"):
        source.operate_binary(0, "trip", who="tester")
    assert any("not sent: not connected" in line for line in logged)
    sim.come_back()
    assert sim.controls == []


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        (datetime(1970, 1, 1, 0, 5, tzinfo=UTC), "1970-01-01T00:05:00Z"),  # a clock never set: uptime
        (datetime(2200, 1, 1, tzinfo=UTC), "2200-01-01T00:00:00Z"),
    ],
)
def test_an_implausible_event_time_is_kept_uncertain_without_a_timestamp(sim, run_source, at, shown):
    """An RTU whose clock was never set stamps events with 1970 plus its uptime, not zero: before,
    those were stored as 1970 and good."""
    logged: list[str] = []
    ctx = RunContext(log=lambda level, msg, node=None: logged.append(msg))
    source, batches = run_source(
        ctx=ctx, **endpoint(sim), **{**QUIET, "event_poll_interval_s": 0.2, "timed_events": True}
    )
    wait_polling(batches, sim)
    first = len(batches.frames)
    sim.set_value("analog_input", 2, 556, at=at)
    sim.set_value("analog_input", 3, 557, at=datetime.now(UTC))  # a good one beside it

    row = batches.wait_rows(pl.col("tag") == "AI.2", after=first).row(-1, named=True)
    reason = f"implausible_timestamp: event time {shown} is outside 1990-01-01..now+1 day"
    assert (row["value"], row["timestamp"], row["quality"], row["reason"]) == (
        556.0,
        None,
        "uncertain",
        reason,
    )
    good = batches.wait_rows(pl.col("tag") == "AI.3", after=first).row(-1, named=True)
    assert good["quality"] == "good" and good["timestamp"] is not None
    assert source.counters["implausible_timestamps"] == 1
    assert any(f"analog_input 2: {reason}" in line for line in logged)


def test_an_endpoint_that_never_answers_is_never_connected_and_backs_off():
    """A TCP port that accepts but never speaks DNP3 (a wrong outstation address, a hung RTU, a
    proxy): before, every attempt said `connected` on the TCP open (the console said "connected
    again" and "lost" by turns) and the back-off started over each time."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        config = {
            "host": "127.0.0.1",
            "port": port,
            "timeout_ms": 300,
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 5.0,
            "points": [{"type": "analog_input", "index": 0}],
            **QUIET,
        }
        source = Dnp3Source(Dnp3SourceConfig(**config), RunContext(), name="rtu")
        states: list[tuple[str, str | None]] = []
        source.on_state = lambda _name, state, detail: states.append((state, detail))
        frames: list[pl.DataFrame] = []
        source.start(lambda batch: frames.append(as_frame(batch)))
        try:
            wait_for(lambda: sum(s == "lost" for s, _ in states) >= 3, timeout=10, what="three lost attempts")
        finally:
            source.stop()
    assert "connected" not in [s for s, _ in states] and "subscribed" not in [s for s, _ in states]
    lost = [d for s, d in states if s == "lost"]
    prefix = f"dnp3://127.0.0.1:{port} (outstation 10): no response within 300 ms"
    assert all(d.startswith(prefix) for d in lost), lost
    assert [d.rsplit("retrying in ", 1)[1] for d in lost[:3]] == ["0.2 s", "0.4 s", "0.8 s"]  # backing off
    gaps = [f for f in frames if (f["quality"] == "bad").all()]
    assert len(gaps) == 1 and gaps[0]["tag"].to_list() == ["AI.0"]  # one gap for the whole outage
    assert source.counters["reconnects"] == 0


def test_a_small_fragment_is_a_tag_batch_and_a_large_one_a_frame_with_the_same_values(sim, run_source):
    """A response fragment of at most LEAN_ROWS values reaches the stream as a `TagBatch` (plain
    columns, no Polars), a larger one as a frame; the values are the outstation's either way."""
    with Dnp3Simulator(port=0, feeders=20, update_interval_s=None, start_t=T0) as big:
        assert sim.point_count <= LEAN_ROWS < big.point_count  # 28 and 280 points
        for rtu, kind in ((sim, "TagBatch"), (big, "DataFrame")):
            source, batches = run_source(
                **endpoint(rtu), **QUIET, points=[p.model_dump() for p in rtu.points()]
            )
            # the outstation's values: a gap (every known tag `bad` with no value, emitted when the
            # link is lost, as it can be on a loaded machine) is stamped too, but is not them
            fragment = batches.wait(
                lambda f, rtu=rtu: f.filter(STATIC & pl.col("value").is_not_null()).height >= rtu.point_count
            )
            source.stop()
            before = batches.frames[: batches.after(fragment) - 1]
            assert all((f.filter(pl.col("value").is_null())["quality"] == "bad").all() for f in before)
            assert batches.kinds[batches.after(fragment) - 1] == kind
            static = fragment.filter(STATIC)
            assert static.schema == TAG_SCHEMA and static["source"].unique().to_list() == ["rtu"]
            values = dict(zip(static["tag"], static["value"], strict=True))
            raw = {key: value for key, (value, _) in rtu.snapshot().items()}
            for point in rtu.points():
                assert values[point.tag_name] == pytest.approx(raw[point.type, point.index] * point.scale)
            assert (static["timestamp"] == static["received_at"]).all() and static[
                "server_timestamp"
            ].is_null().all()


SMALL_BATCHES_ONLY = """
import sys, time
from engine.context import RunContext
from protocols.dnp3.config import Dnp3SourceConfig
from protocols.dnp3.connector import Dnp3Source
from protocols.dnp3.simulator import Dnp3Simulator

with Dnp3Simulator(port=0, feeders=2, update_interval_s=None) as sim:
    config = Dnp3SourceConfig(host="127.0.0.1", port=sim.port, outstation_address=sim.address)
    source, got = Dnp3Source(config, RunContext(), "rtu"), []
    source.start(got.append)
    deadline = time.monotonic() + 20
    while sum(b.height for b in got) < sim.point_count and time.monotonic() < deadline:
        time.sleep(0.05)
    source.stop()
    print(sorted({type(b).__name__ for b in got}), sum(b.height for b in got) >= sim.point_count, "polars" in sys.modules)
"""


def test_a_source_that_only_hands_over_a_few_values_never_imports_polars():
    """Issue 12: a 28-point outstation's fragments travel as TagBatches; in a process of its own
    the source, opendnp3 and the simulator never import Polars."""
    assert last_line(SMALL_BATCHES_ONLY) == "['TagBatch'] True False"
