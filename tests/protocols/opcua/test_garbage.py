"""No single bad item stops the source (issue 9, A2) and "no time" is never year 1601 (A4).

Against the real simulator: an unknown node id, a browse path to nowhere, odd value types (text
that is not UTF-8, byte strings, arrays, NaN, UInt64 max), and a value no client can decode."""

from __future__ import annotations

import math
import threading

import polars as pl
import pytest

from engine.tags import LEAN_ROWS
from protocols.opcua.connector import read_once
from protocols.opcua.simulator import ODD_NODES, OpcUaSimulator

ODD = [f"ns=2;s=Odd.{name}" for name in ODD_NODES]


@pytest.fixture(scope="module")
def odd_sim():
    sim = OpcUaSimulator(turbines=1, interval_s=0.1, odd_nodes=True).start()
    yield sim
    sim.stop()


@pytest.fixture
def odd_farm(odd_sim):
    yield odd_sim
    odd_sim.clear_garbage()


def _rows(frame: pl.DataFrame, tag: str) -> pl.DataFrame:
    return frame.filter(pl.col("tag") == tag)


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_an_unknown_node_id_is_one_bad_record_and_the_others_stream(farm, recorder, mode):
    """The default tag_name (browse_name) used to read the bad node's browse name and stop."""
    config = {
        "endpoint": farm.endpoint,
        "nodes": [
            "ns=2;s=Turbine01.Power",
            "ns=2;s=Nope",
            "WindFarm/Turbine77/Power",
            "ns=2;s=Turbine02.Power",
        ],
        "mode": mode,
        "publishing_interval_ms": 100,
    }
    with recorder(config) as rec:
        rec.wait_for(lambda: min(_good_counts(rec.frame(), ["Turbine01.Power", "Turbine02.Power"])) >= 3)
    frame = rec.frame()
    assert set(frame["tag"]) == {
        "Turbine01.Power",
        "Turbine02.Power",
        "ns=2;s=Nope",
        "WindFarm/Turbine77/Power",
    }
    nope, nowhere = _rows(frame, "ns=2;s=Nope"), _rows(frame, "WindFarm/Turbine77/Power")
    assert nope.select("quality", "reason").rows() == [("bad", "BadNodeIdUnknown")]
    assert nowhere.select("quality", "reason").rows() == [
        ("bad", "BadNoMatch: browse path 'WindFarm/Turbine77/Power': no 'Turbine77' found")
    ]
    assert "lost" not in rec.state_names() and rec.source.counters["errors"] == 2
    logged = [m for level, m in rec.logs if level == "warning"]
    assert any("node ns=2;s=Nope: BadNodeIdUnknown" in m for m in logged)
    assert any("node WindFarm/Turbine77/Power: BadNoMatch" in m for m in logged)


def _good_counts(frame: pl.DataFrame, tags: list[str]) -> list[int]:
    good = frame.filter(pl.col("quality") == "good")
    return [good.filter(pl.col("tag") == t).height for t in tags]


def test_odd_values_are_stored_and_the_others_keep_streaming(odd_farm, recorder):
    """Text that is not UTF-8 used to kill the batcher (Arrow refuses it): nothing more was emitted."""
    config = {
        "endpoint": odd_farm.endpoint,
        "nodes": ODD,
        "browse_root": "WindFarm",
        "publishing_interval_ms": 100,
    }
    with recorder(config) as rec:
        rec.wait_for(lambda: min(_counts(rec.frame(), ["Turbine01.Power", "Odd.NotUtf8", "Odd.Bytes"])) >= 4)
        assert rec.source.state == "subscribed"
    frame = rec.frame()
    text = _rows(frame, "Odd.NotUtf8")
    assert set(text["quality"]) == {"uncertain"} and set(text["reason"]) == {"invalid_utf8"}
    assert all(t.startswith("\ufffd\ufffd") for t in text["value_text"])  # the bytes 0xff 0xfe, each U+FFFD
    assert all(len(t) == 6 for t in _rows(frame, "Odd.Bytes")["value_text"])  # three bytes as hex
    assert _rows(frame, "Odd.Array")["value_text"].str.starts_with("[").all()
    assert all(math.isnan(v) or math.isinf(v) for v in _rows(frame, "Odd.NaN")["value"])
    assert _rows(frame, "Odd.UInt64Max")["value"].min() > 1.8e19
    assert set(frame.filter(~pl.col("tag").is_in(["Odd.NotUtf8", "Odd.OldSourceTime"]))["quality"]) == {
        "good"
    }
    assert rec.source.counters["bad_values"] >= 4 and rec.source.counters["dropped"] == 0
    assert any("node Odd.NotUtf8: text that is not UTF-8" in m for _, m in rec.logs)
    assert sum(b.height for b in rec.batches) == rec.source.counters["notifications"]


def test_text_that_is_not_utf8_is_repaired_in_a_tag_batch_and_in_a_frame(odd_farm, recorder):
    """A few values are handed over as a `TagBatch`, which the stream would reject whole for text
    that is not UTF-8; many (gathered while the consumer is held) as a frame, which Arrow would
    refuse. Both are repaired the same way before they leave, and the tag is logged once."""
    config = {
        "endpoint": odd_farm.endpoint,
        "nodes": ODD,
        "browse_root": "WindFarm",
        "publishing_interval_ms": 100,
    }
    release = threading.Event()
    rec = recorder(config)

    def repaired(kind: str) -> pl.DataFrame:
        kinds, batches = list(rec.kinds), list(rec.batches)
        chosen = [b for k, b in zip(kinds, batches, strict=False) if k == kind]
        return _rows(pl.concat(chosen), "Odd.NotUtf8") if chosen else pl.DataFrame()

    rec.start_holding(release)
    try:
        rec.wait_for(lambda: rec.held_back() > LEAN_ROWS + 20, timeout=20)
        release.set()
        rec.wait_for(lambda: repaired("DataFrame").height >= 1 and repaired("TagBatch").height >= 2)
    finally:
        release.set()
        rec.source.stop()
    assert all(
        (k == "TagBatch") == (b.height <= LEAN_ROWS) for k, b in zip(rec.kinds, rec.batches, strict=True)
    )
    for kind in ("TagBatch", "DataFrame"):
        text = repaired(kind)
        assert set(text["quality"]) == {"uncertain"} and set(text["reason"]) == {"invalid_utf8"}, kind
        assert all(t.startswith("\ufffd\ufffd") for t in text["value_text"]), kind
    logged = [m for _, m in rec.logs if "text that is not UTF-8" in m]
    assert len(logged) == 1 and "node Odd.NotUtf8:" in logged[0]
    assert rec.source.counters["bad_values"] >= rec.frame().filter(pl.col("reason") == "invalid_utf8").height
    assert sum(b.height for b in rec.batches) == rec.source.counters["notifications"]


def _counts(frame: pl.DataFrame, tags: list[str]) -> list[int]:
    return [frame.filter(pl.col("tag") == t).height for t in tags]


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_a_value_no_client_can_decode_is_one_bad_record_counted_and_logged(odd_farm, recorder, mode):
    """asyncua drops a publish response it cannot parse (and a Read fails whole): the source
    counts it, reads every node again in halves down to the culprit, and streams on."""
    config = {
        "endpoint": odd_farm.endpoint,
        "nodes": ["ns=2;s=Odd.Garbage"],
        "browse_root": "WindFarm",
        "mode": mode,
        "publishing_interval_ms": 100,
    }
    with recorder(config) as rec:
        rec.wait_for(lambda: _counts(rec.frame(), ["Turbine01.Power"])[0] >= 2)
        odd_farm.inject_garbage()
        rec.wait_for(lambda: rec.source.counters["bad_values"] >= 1)
        marker = rec.frame().height
        rec.wait_for(lambda: rec.frame()[marker:].filter(pl.col("tag") == "Turbine01.Power").height >= 3)
        assert rec.source.state == ("subscribed" if mode == "subscribe" else "connected")
    frame = rec.frame()
    garbage = frame.filter((pl.col("tag") == "Odd.Garbage") & (pl.col("quality") == "bad"))
    assert garbage.height >= 1 and garbage["reason"].str.starts_with("undecodable: NotEnoughData").all()
    assert "lost" not in rec.state_names()
    if mode == "subscribe":
        assert rec.source.counters["undecodable"] >= 1
        assert any("a publish response: NotEnoughData" in m for _, m in rec.logs)
    assert any("node Odd.Garbage: NotEnoughData" in m for _, m in rec.logs)
    # Every other tag still arrived after the garbage did.
    after = frame.filter(pl.col("received_at") > garbage["received_at"].min())
    assert set(after.filter(pl.col("quality") == "good")["tag"]) >= {"Turbine01.Power", "Turbine01.WindSpeed"}


def test_read_once_pins_an_undecodable_value_on_its_node(odd_farm):
    odd_farm.inject_garbage()
    frame = read_once({"endpoint": odd_farm.endpoint, "nodes": [*ODD, "ns=2;s=Turbine01.Power"]})
    assert frame.height == len(ODD) + 1
    bad = frame.filter(pl.col("quality") == "bad")
    assert bad["tag"].to_list() == ["Odd.Garbage"] and bad["reason"][0].startswith("undecodable: ")
    assert _rows(frame, "Odd.NotUtf8")["reason"].to_list() == ["invalid_utf8"]


@pytest.mark.parametrize("how", ["read", "subscribe"])
def test_zero_or_missing_source_time_is_no_time_never_1601(odd_farm, recorder, how):
    nodes = ["ns=2;s=Odd.NoSourceTime", "ns=2;s=Odd.ZeroSourceTime", "ns=2;s=Odd.ZeroTimes"]
    config = {"endpoint": odd_farm.endpoint, "nodes": nodes, "publishing_interval_ms": 100}
    if how == "read":
        frame = read_once(config)
    else:
        with recorder(config) as rec:
            rec.wait_for(
                lambda: (
                    min(_counts(rec.frame(), ["Odd.NoSourceTime", "Odd.ZeroSourceTime", "Odd.ZeroTimes"]))
                    >= 2
                )
            )
        frame = rec.frame()
    assert frame["timestamp"].null_count() == 0 and frame["timestamp"].dt.year().min() >= 2020
    assert frame["server_timestamp"].drop_nulls().dt.year().min() >= 2020
    for tag in ("Odd.NoSourceTime", "Odd.ZeroSourceTime"):  # the server's time orders them
        rows = _rows(frame, tag)
        assert rows.height >= 1 and rows["server_timestamp"].null_count() == 0
        assert (rows["timestamp"] == rows["server_timestamp"]).all()
    zero = _rows(frame, "Odd.ZeroTimes")  # no time at all: the server's is null, the receive time orders
    assert zero.height >= 1 and zero["server_timestamp"].null_count() == zero.height
    assert (zero["timestamp"] == zero["received_at"]).all()


@pytest.mark.parametrize("how", ["read", "subscribe"])
def test_an_implausible_source_time_is_uncertain_and_the_server_time_orders(odd_farm, recorder, how):
    """A PLC whose clock was never set stamps 1970 plus its uptime: before, stored as 1970, good."""
    config = {
        "endpoint": odd_farm.endpoint,
        "nodes": ["ns=2;s=Odd.OldSourceTime"],
        "publishing_interval_ms": 100,
    }
    if how == "read":
        frame = read_once(config)
    else:
        with recorder(config) as rec:
            rec.wait_for(lambda: rec.frame().height >= 2)
        frame = rec.frame()
        assert rec.source.counters["implausible_timestamps"] >= 2
        warned = [m for level, m in rec.logs if level == "warning"]
        assert any("node Odd.OldSourceTime: implausible_timestamp: " in m for m in warned)
    reason = "implausible_timestamp: source time 1970-01-01T00:05:00Z is outside 1990-01-01..now+1 day"
    assert frame.height >= 1 and set(frame["quality"]) == {"uncertain"} and set(frame["reason"]) == {reason}
    assert frame["value"].null_count() == 0
    assert (
        frame["server_timestamp"].null_count() == 0
        and (frame["timestamp"] == frame["server_timestamp"]).all()
    )
