"""The `nats` destination as a pipeline uses it: through the connector registry, the durable outbox and
its forwarder (store_and_forward) or inside the run's commit (direct); an outage through
tests/faultproxy.py, after which the backlog arrives flagged historical; a poison record goes to
quarantine and the rest arrives once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import polars as pl
import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.outbox.manager import OutboxManager
from tests.conftest import require_service
from tests.faultproxy import FaultProxy
from tests.upstream.test_sparkplug_outbox import tags
from tests.waiting import wait_for

pytestmark = pytest.mark.services
SERVER = "nats://127.0.0.1:4222"


async def _js(fn):
    import nats

    nc = await nats.connect(SERVER)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def stream_messages(name: str) -> int:
    async def count(j):
        try:
            return (await j.stream_info(name)).state.messages
        except Exception:
            return 0

    return asyncio.run(_js(count))


def read_all(name: str, subject: str, expected: int) -> list[tuple[dict, dict]]:
    """(body, headers) of every message in the stream, in stream order."""

    async def fetch(j):
        sub = await j.pull_subscribe(subject, stream=name)
        out = []
        while len(out) < expected:
            for m in await sub.fetch(min(500, expected - len(out)), timeout=5):
                out.append((json.loads(m.data), dict(m.headers or {})))
                await m.ack()
        await sub.unsubscribe()
        return out

    return asyncio.run(_js(fetch))


@pytest.fixture
def stream():
    require_service("nats")
    name = f"O{uuid.uuid4().hex[:10].upper()}"
    yield name, f"o{name.lower()}"

    async def delete(j):
        with contextlib.suppress(Exception):
            await j.delete_stream(name)

    asyncio.run(_js(delete))


@pytest.fixture
def manager(tmp_path):
    m = OutboxManager(tmp_path / "data")
    yield m
    m.close()


def sink(manager: OutboxManager, stream: tuple[str, str], delivery: str, port: int = 4222, **config):
    cls = registry.get("nats")
    assert cls is not None and "destination" in cls.roles()
    name, prefix = stream
    cfg = cls.SinkConfig.model_validate(
        {"servers": [f"nats://127.0.0.1:{port}"], "subject": prefix + ".{edge}.{pipeline}.{tag}", "stream": name,
         "create_stream": True, "connect_timeout": 2, "ack_timeout": 2, **config}
    )  # fmt: skip
    ctx = RunContext(pipeline="line1", data_dir=manager.data_dir, delivery_default=delivery, outbox=manager)
    return cls.make_sink(cfg, ctx, "central")


def commit(s, frame: pl.DataFrame) -> None:
    s.open()
    s.write(frame)
    s.close()


def test_store_and_forward_delivers_every_record_once(manager, stream):
    name, prefix = stream
    s = sink(manager, stream, "store_and_forward")
    for i in range(5):
        commit(s, tags(400, start=i * 400))
    store = manager.store("line1", "central")
    wait_for(lambda: stream_messages(name) == 2000, 30, what="2000 messages in the stream")
    wait_for(lambda: store.pending()[1] == 0, 10, what="outbox drained")
    got = read_all(name, prefix + ".>", 2000)
    assert sorted(b["value"] for b, _ in got) == [float(k) for k in range(2000)]
    assert len({h["Nats-Msg-Id"] for _, h in got}) == 2000
    assert all(h["Nats-Msg-Id"] == b["_key"] for b, h in got)
    # per tag, stream order is the order of acceptance
    for tag in ("t0", "t1", "t2", "t3"):
        values = [b["value"] for b, _ in got if b["tag"] == tag]
        assert values == sorted(values)


def test_direct_delivers_inside_the_run(manager, stream):
    name, _ = stream
    commit(sink(manager, stream, "direct"), tags(100))
    assert stream_messages(name) == 100  # committed with the run: no waiting


def test_outage_backlog_arrives_once_flagged_historical(manager, stream):
    name, prefix = stream
    with FaultProxy("127.0.0.1", 4222) as proxy:
        proxy.refuse()
        s = sink(manager, stream, "store_and_forward", port=proxy.port)
        for i in range(4):  # 1600 records pile up while the server cannot be reached
            commit(s, tags(400, start=i * 400))
        store = manager.store("line1", "central")
        wait_for(lambda: store.status()["link_state"] == "down", 20, what="link down")
        proxy.pass_through()
        wait_for(lambda: store.pending()[1] == 0, 60, what="backlog drained")
        commit(s, tags(8, start=100_000))  # live again
        wait_for(lambda: stream_messages(name) == 1608, 30, what="every record in the stream")
    got = read_all(name, prefix + ".>", 1608)
    backlog = [h.get("Aggregator-Historical") for b, h in got if b["value"] < 100_000]
    live = [h.get("Aggregator-Historical") for b, h in got if b["value"] >= 100_000]
    assert backlog == ["true"] * 1600
    assert live == [None] * 8


def test_poison_record_is_quarantined_the_rest_arrives(manager, stream):
    name, _ = stream
    frame = tags(200)
    # one record larger than the server's max_payload (1 MB): JetStream can never take it
    frame = frame.with_columns(
        pl.when(pl.col("value") == 77.0).then(pl.lit("x" * (1_100_000))).otherwise(pl.col("value_text")).alias("value_text")
    )  # fmt: skip
    s = sink(manager, stream, "store_and_forward", max_tries=2)
    commit(s, frame)
    store = manager.store("line1", "central")
    wait_for(lambda: store.pending()[1] == 0, 30, what="outbox drained")
    assert stream_messages(name) == 199
    status = store.status()
    assert status["quarantined_records"] == 1
