"""The `sparkplug_b` destination read by others: pysparkplug (a third-party Sparkplug B decoder, run
as a subprocess with its own paho-mqtt 1.x, see tests/peers.py) and our own `sparkplug_b` source
(the round trip), through Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

import protocols
from protocols.mqtt.simulator import simulator_config
from tests import peers
from tests.protocols.mqtt.test_pysparkplug import Peer
from tests.protocols.mqtt.test_source import make_source, start_and_subscribe
from tests.upstream.test_sparkplug_edge import T0, T0_MS, edge_node, group, rebirth_command, tags_table  # noqa: F401

pytestmark = pytest.mark.services
protocols.register_all()


def test_pysparkplug_decodes_births_data_deaths_bd_seq_and_rebirth(tmp_path, group):  # noqa: F811
    listener = Peer(peers.require("pysparkplug"), "listen", "127.0.0.1", "1883", f"spBv1.0/{group}/#")
    try:
        listener.wait(lambda line: line.get("event") == "subscribed")
        node = edge_node(tmp_path, group, device_id="Pump1")
        try:
            node.open()
            node.deliver(tags_table(["Flow", "Level", "Mode"], rounds=3, text={"Mode": "auto"}))
            listener.wait(lambda line: line.get("type") == "DDATA")
            rebirth_command(group)
            listener.wait(lambda line: line.get("type") == "NBIRTH", count=2)
            node.deliver(tags_table(["Flow"], start=T0 + timedelta(minutes=1)), historical=True)
            listener.wait(lambda line: line.get("type") == "DDATA", count=2)
        finally:
            node.close()
        listener.wait(lambda line: line.get("type") == "NDEATH")
        restarted = edge_node(tmp_path, group, device_id="Pump1")
        try:
            restarted.open()
            listener.wait(lambda line: line.get("type") == "NBIRTH", count=3)
        finally:
            restarted.close()
        listener.wait(lambda line: line.get("type") == "NDEATH", count=2)
    finally:
        listener.close()
    lines = [line for line in listener.lines if "topic" in line and "/NCMD/" not in line["topic"]]
    assert not [line for line in lines if "error" in line], lines
    births = [line for line in lines if line["type"] == "NBIRTH"]
    bd = [next(m["value"] for m in b["metrics"] if m["name"] == "bdSeq") for b in births]
    assert bd == [0, 0, 1]  # the NCMD rebirth keeps the connection's bdSeq; a restart takes the next
    assert [d["bdSeq"] for d in lines if d["type"] == "NDEATH"] == [0, 1]
    for b in births:
        rebirth = next(m for m in b["metrics"] if m["name"] == "Node Control/Rebirth")
        assert (rebirth["datatype"], rebirth["value"], b["seq"]) == ("BOOLEAN", False, 0)
    dbirth = next(line for line in lines if line["type"] == "DBIRTH")
    assert {m["name"]: m["datatype"] for m in dbirth["metrics"]} == {
        "Flow": "DOUBLE",
        "Level": "DOUBLE",
        "Mode": "STRING",
    }
    ddata = [line for line in lines if line["type"] == "DDATA"]
    got = [(m["name"], m["timestamp"], m["value"]) for m in ddata[0]["metrics"]]  # names from the aliases
    expected = []
    for r in range(1, 3):  # round 0: the DBIRTH's values
        expected += [("Flow", T0_MS + 1000 * r, 10.0 * r), ("Level", T0_MS + 1000 * r, 10.0 * r + 1)]
        expected += [("Mode", T0_MS + 1000 * r, f"auto-{r}")]
    assert got == expected
    assert [(m["name"], m["value"]) for m in ddata[1]["metrics"]] == [("Flow", 0.0)]
    # seq: 0 at each NBIRTH, +1 for every message after it
    run: list[int] = []
    for line in lines:
        if line["type"] == "NBIRTH":
            run = []
        if line["type"] != "NDEATH":
            run.append(line["seq"])
            assert run == list(range(len(run))), run


def test_our_sparkplug_source_reads_what_the_edge_node_publishes(tmp_path, group):  # noqa: F811
    source, got = make_source("sparkplug_b", simulator_config(group))
    start_and_subscribe(source, got)
    node = edge_node(tmp_path, group, device_id="Pump1")
    table = tags_table(["Flow", "Mode"], rounds=4, text={"Mode": "auto"}, quality="uncertain")
    try:
        node.open()
        node.deliver(table)
        got.wait(lambda c: c.frame.filter(pl.col("tag") == f"{group}/Box1/Pump1/Flow").height >= 4)
        node.close()
        got.wait(lambda c: c.frame.filter(pl.col("reason") == "comm_lost").height == 2 + 2)  # bdSeq, Rebirth
    finally:
        node.close()
        source.stop()
    frame = got.frame
    data = frame.filter(pl.col("tag").str.starts_with(f"{group}/Box1/Pump1/") & (pl.col("quality") == "good"))
    flow = data.filter(pl.col("tag").str.ends_with("/Flow")).sort("timestamp")
    mode = data.filter(pl.col("tag").str.ends_with("/Mode")).sort("timestamp")
    # the DBIRTH carries each new metric's first value, DDATA the others: each value once, in order
    assert flow["value"].to_list() == [0.0, 10.0, 20.0, 30.0]
    assert mode["value_text"].to_list() == ["auto-0", "auto-1", "auto-2", "auto-3"]
    assert flow["timestamp"].dt.epoch("ms").to_list() == [T0_MS + 1000 * r for r in range(4)]
    assert source.counters.get("sequence_gaps", 0) == 0 and source.counters.get("rebirth_requests", 0) == 0
    assert not frame.filter(pl.col("tag").str.contains("alias_")).height
