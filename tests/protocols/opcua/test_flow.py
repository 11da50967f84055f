"""Back-pressure, drops that are counted, nothing after stop(), writes, and the simulator CLI."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter

import polars as pl
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.tags import LEAN_ROWS, TAG_SCHEMA
from protocols.opcua import connector
from protocols.opcua.client import OpcUaSession, _data_change_filter
from protocols.opcua.config import OpcUaConfig
from tests.children import last_line


def _config(endpoint: str, **extra) -> dict:
    return {"endpoint": endpoint, "browse_root": "WindFarm", "publishing_interval_ms": 100, **extra}


def test_a_blocked_consumer_holds_values_then_counts_drops(farm, recorder, monkeypatch):
    monkeypatch.setattr(connector, "MAX_PENDING", 30)
    release = threading.Event()
    calls: list[int] = []

    def slow_emit(batch):
        calls.append(batch.height)
        release.wait(10)  # the runtime's back-pressure

    source = recorder(_config(farm.endpoint)).source
    source.start(slow_emit)
    try:
        deadline = time.monotonic() + 10
        while source.counters["dropped"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.counters["dropped"] > 0 and source.state == "subscribed"
        assert len(calls) == 1  # one emit in flight, values collected meanwhile (bounded)
    finally:
        release.set()
        source.stop()
    # Every accepted value was emitted once the consumer moved again; the rest are counted drops.
    assert sum(calls) == source.counters["notifications"]


def test_nothing_is_emitted_after_stop(farm, recorder):
    rec = recorder(_config(farm.endpoint))
    with rec:
        rec.wait_for(lambda: len(rec.batches) >= 2)
    count = len(rec.batches)
    time.sleep(0.4)
    assert len(rec.batches) == count and rec.source.state == "stopped"
    assert sum(b.height for b in rec.batches) == rec.source.counters["notifications"]  # the last values too


def test_writes_with_status_reach_readers(farm):
    config = OpcUaConfig(endpoint=farm.endpoint, nodes=["ns=2;s=Turbine03.Power"])

    async def write_and_read() -> list:
        async with OpcUaSession(config, Counter()) as session:
            farm.stall()
            try:
                await session.write_value("ns=2;s=Turbine03.Power", 1234.5, 0x40900000)
                got: list = []
                await session.read_values(await session.tag_nodes(), lambda *row: got.append(row))
                return got
            finally:
                farm.stall(False)

    ((tag, value, code, _source_ts, server_ts),) = asyncio.run(write_and_read())
    assert (tag, value, code) == ("Turbine03.Power", 1234.5, 0x40900000)
    assert server_ts is not None


@pytest.mark.parametrize(("kind", "expected"), [("absolute", 1), ("percent", 2)])
def test_deadband_becomes_a_data_change_filter(kind, expected):
    cfg = OpcUaConfig(endpoint="opc.tcp://h:1", nodes=["i=1"], deadband={"type": kind, "value": 2.5})
    flt = _data_change_filter(cfg)
    assert int(flt.DeadbandType) == expected and flt.DeadbandValue == 2.5
    assert _data_change_filter(OpcUaConfig(endpoint="opc.tcp://h:1", nodes=["i=1"])) is None


@given(
    st.floats(0.01, 5.0),
    st.floats(1.0, 60.0),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32),
)
@example(2.0, 1.0, 0.0, 0)  # a first wait above the ceiling: capped
def test_backoff_stays_within_its_bounds(initial, maximum, jitter, seed):
    import random

    delays = list(
        itertools.islice(connector.backoff_delays(initial, maximum, jitter, random.Random(seed)), 12)
    )
    # the shared back-off (engine/runs/retry.py): `maximum` is a ceiling for the first wait too
    first = min(initial, maximum)
    assert all(0.0 <= d <= maximum * (1 + jitter) + 1e-9 for d in delays)
    assert first * (1 - jitter) - 1e-9 <= delays[0] <= first * (1 + jitter) + 1e-9


@pytest.mark.slow
def test_run_cli_prints_the_endpoint_and_tag_count(capsys):
    from protocols.opcua.simulator import run_cli

    run_cli(0, 8, seconds=0.2)
    out = capsys.readouterr().out
    assert "opc.tcp://127.0.0.1:" in out and "8 tags" in out


def test_a_batch_taken_when_stop_cancels_the_flusher_is_still_handed_over(recorder):
    # The emitter's thread is busy when the flusher hands a batch over and stop() cancels the
    # flusher: the batch must still reach the consumer (it is out of the builder already).
    source = recorder(_config("opc.tcp://127.0.0.1:1")).source
    source._on_value("Turbine01.Power", 1.5, 0, None, None)
    got: list[int] = []
    gate = threading.Event()
    emitter = connector.ThreadPoolExecutor(1)
    emitter.submit(gate.wait, 10)  # the consumer is still busy with the previous batch

    async def flush_then_cancel() -> None:
        flusher = asyncio.create_task(source._flush(lambda batch: got.append(batch.height), emitter))
        await asyncio.sleep(0)  # the flusher takes the values and hands them to the emitter
        assert len(source._builder) == 0
        flusher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flusher

    asyncio.run(flush_then_cancel())
    gate.set()
    emitter.shutdown(wait=True)
    assert got == [1]


def test_a_consumer_that_fails_is_counted_once_and_logged(recorder):
    rec = recorder(_config("opc.tcp://127.0.0.1:1"))
    source = rec.source
    source._on_value("Turbine01.Power", 1.5, 0, None, None)

    def failing(batch):
        raise RuntimeError("historian full")

    async def flush() -> None:
        with connector.ThreadPoolExecutor(1) as emitter:
            await source._flush(failing, emitter)

    asyncio.run(flush())
    assert source.counters["errors"] == 1
    assert ("error", "emit failed: historian full") in rec.logs


def test_a_few_values_are_a_tag_batch_and_many_a_frame_with_the_same_records(farm, recorder):
    """A batch of at most LEAN_ROWS values reaches the stream as a `TagBatch` (plain columns, no
    Polars), a larger one (gathered while the consumer is held) as a frame; the records are the
    same either way: every value once, the simulator's, with both timestamps."""
    from protocols import windfarm

    release = threading.Event()
    rec = recorder(_config(farm.endpoint, sampling_interval_ms=50))
    rec.start_holding(release)
    try:
        rec.wait_for(lambda: rec.held_back() > LEAN_ROWS + 20, timeout=20)
        release.set()
        rec.wait_for(lambda: "DataFrame" in rec.kinds and rec.kinds[-1] == "TagBatch")
    finally:
        release.set()
        rec.source.stop()
    kinds, batches = list(rec.kinds), list(rec.batches)
    assert kinds[0] == "TagBatch" and kinds.count("DataFrame") == 1
    assert all(
        (kind == "TagBatch") == (b.height <= LEAN_ROWS) for kind, b in zip(kinds, batches, strict=True)
    )
    assert sum(b.height for b in batches) == rec.source.counters["notifications"]
    for kind in ("TagBatch", "DataFrame"):
        frame = pl.concat([b for k, b in zip(kinds, batches, strict=True) if k == kind])
        assert frame.schema == TAG_SCHEMA and frame["source"].unique().to_list() == ["opcua"]
        assert (
            frame["quality"].unique().to_list() == ["good"] and frame["reason"].null_count() == frame.height
        )
        assert frame["timestamp"].null_count() == 0 and frame["server_timestamp"].null_count() == 0
        speeds = frame.filter(pl.col("tag") == "Turbine02.WindSpeed")
        assert speeds.height, kind
        for ts, value in speeds.select("timestamp", "value").rows():
            assert value == pytest.approx(windfarm.wind_speed(ts.timestamp(), 1), abs=1e-6), kind


SMALL_BATCHES_ONLY = """
import sys, time
from engine.context import RunContext
from protocols.opcua.connector import OpcUaSource
from protocols.opcua.simulator import OpcUaSimulator

sim = OpcUaSimulator(turbines=1, interval_s=0.1).start()
config = {"endpoint": sim.endpoint, "browse_root": "WindFarm", "publishing_interval_ms": 100}
source, got = OpcUaSource(config, RunContext(), "opcua"), []
source.start(got.append)
deadline = time.monotonic() + 20
while sum(b.height for b in got) < 12 and time.monotonic() < deadline:
    time.sleep(0.05)
source.stop()
sim.stop()
print(sorted({type(b).__name__ for b in got}), sum(b.height for b in got) >= 12, "polars" in sys.modules)
"""


def test_a_source_that_only_hands_over_a_few_values_never_imports_polars():
    """Issue 12: a one-turbine subscription (a few values a publish) travels as TagBatches; in a
    process of its own the source, its session and the simulator never import Polars."""
    assert last_line(SMALL_BATCHES_ONLY) == "['TagBatch'] True False"
