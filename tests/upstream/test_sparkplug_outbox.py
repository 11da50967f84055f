"""The `sparkplug_b` destination as a pipeline uses it: through the connector registry, the durable
outbox and its forwarder (store_and_forward), or inside the run's commit (direct); and an outage
through tests/faultproxy.py, after which the backlog arrives flagged `is_historical`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

import protocols
from engine.connectors import registry
from engine.context import RunContext
from engine.outbox.manager import OutboxManager
from engine.tags import TAG_SCHEMA
from tests.faultproxy import FaultProxy
from tests.upstream.test_sparkplug_edge import Spy, group, spy  # noqa: F401
from tests.waiting import wait_for

pytestmark = pytest.mark.services
protocols.register_all()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def tags(n: int, start: int = 0, tag_count: int = 4) -> pl.DataFrame:
    """TAG_SCHEMA records, 1 ms apart from record `start` on, round-robin over tags t0..t3."""
    ks = list(range(start, start + n))
    return pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(milliseconds=k) for k in ks],
            "server_timestamp": [None] * n,
            "tag": [f"t{k % tag_count}" for k in ks],
            "value": [float(k) for k in ks],
            "value_text": [None] * n,
            "quality": ["good"] * n,
            "reason": [None] * n,
            "source": ["sim"] * n,
            "received_at": [T0] * n,
        },
        schema=TAG_SCHEMA,
    )


def sink(manager: OutboxManager, group: str, delivery: str, port: int = 1883):  # noqa: F811
    cls = registry.get("sparkplug_b")
    assert cls is not None and "destination" in cls.roles()
    config = cls.SinkConfig.model_validate(
        {"group_id": group, "edge_node_id": "Box1", "device_id": "Line1", "port": port,
         "connect_timeout": 2, "ack_timeout": 2, "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5}
    )  # fmt: skip
    ctx = RunContext(pipeline="line1", data_dir=manager.data_dir, delivery_default=delivery, outbox=manager)
    return cls.make_sink(config, ctx, "central")


def commit(s, frame: pl.DataFrame) -> None:
    s.open()
    s.write(frame)
    s.close()


def values(spy_: Spy) -> list[tuple[int, float, bool]]:
    """(timestamp, value, is_historical) of every device metric born or sent, in broker order."""
    out = []
    for m in spy_.messages:
        if m.kind in ("DBIRTH", "DDATA"):
            out += [(x.timestamp, x.double_value, x.is_historical) for x in m.payload.metrics]
    return out


@pytest.fixture
def manager(tmp_path):
    m = OutboxManager(tmp_path / "data")
    yield m
    m.close()


def test_store_and_forward_delivers_every_record_once(manager, group, spy):  # noqa: F811
    s = sink(manager, group, "store_and_forward")
    for i in range(5):
        commit(s, tags(400, start=i * 400))
    wait_for(lambda: len(values(spy)) == 2000, 30, what="2000 values at the spy")
    store = manager.store("line1", "central")
    wait_for(lambda: store.pending()[1] == 0, 10, what="outbox drained")
    got = values(spy)
    assert sorted(ts for ts, _, _ in got) == [T0_MS + k for k in range(2000)]
    assert sorted(v for _, v, _ in got) == [float(k) for k in range(2000)]
    assert spy.kinds()[:2] == ["NBIRTH", "DBIRTH"]


def test_direct_delivers_inside_the_run(manager, group, spy):  # noqa: F811
    s = sink(manager, group, "direct")
    commit(s, tags(100))
    got = spy.wait(lambda m: m.kind == "DDATA")
    assert got and len(values(spy)) == 100  # DBIRTH: the first of each tag, DDATA: the other 96


def test_outage_backlog_arrives_flagged_historical(manager, group, spy):  # noqa: F811
    with FaultProxy("127.0.0.1", 1883) as proxy:
        proxy.refuse()
        s = sink(manager, group, "store_and_forward", port=proxy.port)
        for i in range(4):  # 1600 records pile up while the broker cannot be reached
            commit(s, tags(400, start=i * 400))
        store = manager.store("line1", "central")
        wait_for(lambda: store.status()["link_state"] == "down", 20, what="link down")
        proxy.pass_through()
        wait_for(lambda: store.pending()[1] == 0, 60, what="backlog drained")
        commit(s, tags(8, start=100_000))  # live again
        # the DBIRTH carries each tag's first value; the backlog's DDATA every record (historical)
        wait_for(lambda: len(values(spy)) == 4 + 1600 + 8, 30, what="every value at the spy")
    got = values(spy)
    backlog = [h for ts, _, h in got if ts < T0_MS + 100_000]
    live = [h for ts, _, h in got if ts >= T0_MS + 100_000]
    born = sum(len(m.payload.metrics) for m in spy.messages if m.kind == "DBIRTH")
    assert born == 4 and sum(backlog) == 1600  # births are current values, never historical
    assert live == [False] * 8
