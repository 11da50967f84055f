"""pysparkplug, a Sparkplug B implementation nobody here wrote, against ours through Mosquitto:
as the publisher our source reads, and as the decoder of what our edge node (the simulator)
publishes. It needs paho-mqtt 1.x, so it runs as a subprocess from its own directory
(tests/peers.py installs it; `python -m tests` does that first)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from protocols import windfarm
from protocols.mqtt.simulator import SparkplugSimulator, simulator_config, tag_names, turbine_name
from tests import peers
from tests.conftest import require_service
from tests.protocols.mqtt.test_source import make_source, start_and_subscribe
from tests.waiting import wait_for

pytestmark = pytest.mark.services
PEER = Path(__file__).with_name("pysparkplug_peer.py")


@pytest.fixture
def group():
    require_service("mosquitto")
    return f"psp-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peer_path():
    return peers.require("pysparkplug")


class Peer:
    """The pysparkplug subprocess: its JSON lines as they come, commands on its stdin."""

    def __init__(self, path: Path, *args: str):
        env = {**os.environ, "PYTHONPATH": str(path)}
        self.process = subprocess.Popen(
            [sys.executable, str(PEER), *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict] = []
        self.changed = threading.Condition()
        self._stderr: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.put(self.process.stderr.read()), daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(json.loads(line))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait(self, predicate, count: int = 1, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(found := [line for line in self.lines if predicate(line)]) < count:
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self.changed.wait(0.2)):
                    raise AssertionError(
                        f"pysparkplug peer: waited for {count}, got {self.lines[-5:]}{self.stderr()}"
                    )
                self.changed.wait(left)
            return found

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stderr(self) -> str:
        try:
            return "; stderr: " + self._stderr.get(timeout=1)[-2000:]
        except queue.Empty:
            return ""


@pytest.mark.parametrize("ending", ["crash", "disconnect"])
def test_pysparkplug_edge_node_into_our_source(group, peer_path, ending):
    """pysparkplug's EdgeNode (a device, every scalar type we map) -> Mosquitto -> our source.
    `crash`: it dies without a DISCONNECT, the broker sends its will (the NBIRTH's bdSeq), and
    every metric born gets a gap record. `disconnect`: pysparkplug 0.6.1's clean NDEATH carries the
    NEXT bdSeq (1 after an NBIRTH with 0), so a Sparkplug 3.0 host must take it as stale: ignored,
    counted, no gaps."""
    source, got = make_source("sparkplug_b", simulator_config(group))
    start_and_subscribe(source, got)
    edge = Peer(peer_path, "edge", "127.0.0.1", "1883", group, "PyEdge", "3")
    prefix = f"{group}/PyEdge"
    try:
        born = edge.wait(lambda line: line.get("event") == "born")[0]
        sent = edge.wait(lambda line: line.get("event") == "sent", count=3)
        got.wait(lambda c: c.frame.filter(pl.col("tag") == f"{prefix}/Pump1/Flow").height == 1 + 3)
        edge.send(ending)
        metrics = len(born["node"]) + 1 + len(born["device"])  # bdSeq too
        if ending == "crash":
            got.wait(lambda c: c.frame.filter(pl.col("reason") == "comm_lost").height == metrics)
        else:
            edge.wait(lambda line: line.get("event") == "disconnected")
            wait_for(lambda: source.counters["stale_deaths"] == 1, 10.0, 0.02)
    finally:
        edge.close()
        source.stop()
    frame = got.frame
    good = frame.filter(pl.col("quality") == "good")
    for round_ in sent:
        at = round_["timestamp"]
        for device, values in ((None, round_["node"]), ("Pump1", round_["device"])):
            for name, value in values.items():
                tag = f"{prefix}/{device}/{name}" if device else f"{prefix}/{name}"
                rows = good.filter((pl.col("tag") == tag) & (pl.col("timestamp").dt.epoch("ms") == at))
                assert rows.height == 1, (tag, at)
                if isinstance(value, str):
                    assert rows["value_text"].to_list() == [value], tag
                else:  # bool 1/0, Int16 negative, UInt64 2**40 + i, Float
                    assert rows["value"].to_list() == [float(value)], tag
    assert not frame.filter(pl.col("tag").str.contains("alias_")).height
    c = source.counters
    assert (
        c["births"],
        c.get("sequence_gaps", 0),
        c.get("rebirth_requests", 0),
        c.get("bad_payloads", 0),
    ) == (
        2,
        0,
        0,
        0,
    )
    gaps = frame.filter(pl.col("quality") != "good")
    if ending == "crash":
        assert (c["deaths"], c.get("stale_deaths", 0)) == (1, 0)
        assert gaps["reason"].unique().to_list() == ["comm_lost"] and gaps.height == metrics
    else:
        assert (c.get("deaths", 0), c["stale_deaths"]) == (0, 1)
        assert gaps.height == 0
        assert (
            f"spBv1.0/{group}/NDEATH/PyEdge",
            "stale NDEATH ignored: bdSeq 1, but the node's NBIRTH had 0",
        ) in source.last_errors


def test_pysparkplug_decodes_our_births_data_and_deaths(group, peer_path):
    """Our edge node (the simulator) -> Mosquitto -> pysparkplug's decoder: bdSeq pairs each
    NDEATH with its NBIRTH (the will of a killed link and the clean stop), NDEATH has no seq, seq
    runs 0, 1, 2... from each NBIRTH, and the aliases of the data resolve to the born names."""
    listener = Peer(peer_path, "listen", "127.0.0.1", "1883", f"spBv1.0/{group}/#")
    sim = SparkplugSimulator(group=group, turbines=2, tags=2, interval_s=0.05)
    try:
        listener.wait(lambda line: line.get("event") == "subscribed")
        sim.start()
        ddata = f"spBv1.0/{group}/DDATA/Gateway1/{turbine_name(1)}"
        listener.wait(lambda line: line.get("topic") == ddata, count=3)
        sim.kill()  # the broker sends the will; the node comes back with the next bdSeq
        listener.wait(lambda line: line.get("type") == "NBIRTH", count=2)
        listener.wait(lambda line: line.get("topic") == ddata, count=6)
    finally:
        sim.stop()
    try:
        listener.wait(lambda line: line.get("type") == "NDEATH", count=2)
    finally:
        listener.close()
    lines = [line for line in listener.lines if "topic" in line]
    assert not [line for line in lines if "error" in line]
    births = [line for line in lines if line["type"] == "NBIRTH"]
    deaths = [line for line in lines if line["type"] == "NDEATH"]
    bd_seqs = [next(m["value"] for m in b["metrics"] if m["name"] == "bdSeq") for b in births]
    assert bd_seqs == [0, 1]
    assert [d["bdSeq"] for d in deaths] == [0, 1]  # the will of the killed link, then the clean stop
    assert [d["raw_seq"] for d in deaths] == [None, None]
    # seq: 0 at each NBIRTH, then +1 for every message of that connection, in broker order
    connection: list[int] = []
    for line in lines:
        if line["type"] == "NBIRTH":
            connection = []
        if line["type"] == "NDEATH":
            assert connection == [i % 256 for i in range(len(connection))], connection[:20]
            continue
        connection.append(line["seq"])
    names = tag_names(2)
    for line in lines:
        if line["type"] != "DDATA":
            continue
        turbine = int(line["topic"].rsplit("Turbine", 1)[1]) - 1
        assert [m["name"] for m in line["metrics"]] == names  # resolved by pysparkplug from the aliases
        assert [m["datatype"] for m in line["metrics"]] == ["DOUBLE", "DOUBLE"]
        t = line["timestamp"] / 1000
        expected = [windfarm.wind_speed(t, turbine), windfarm.turbine_power_kw(t, turbine)]
        assert [m["value"] for m in line["metrics"]] == expected
