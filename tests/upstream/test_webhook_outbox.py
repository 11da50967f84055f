"""The `webhook` destination through the registry, the durable outbox and its forwarder: a receiver
that answers 503 with Retry-After is waited for and then gets every record once; a record the
receiver refuses (422) goes to quarantine and the rest arrives."""

from __future__ import annotations

import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.outbox.manager import OutboxManager
from tests.upstream.test_sparkplug_outbox import tags
from tests.upstream.test_webhook import Receiver
from tests.waiting import wait_for


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def manager(tmp_path):
    m = OutboxManager(tmp_path / "data")
    yield m
    m.close()


def sink(manager: OutboxManager, url: str, delivery: str, **config):
    cls = registry.get("webhook")
    assert cls is not None and "destination" in cls.roles()
    cfg = cls.SinkConfig.model_validate({"url": url, "timeout": 2, "batch_rows": 100, **config})
    ctx = RunContext(pipeline="line1", data_dir=manager.data_dir, delivery_default=delivery, outbox=manager)
    return cls.make_sink(cfg, ctx, "erp")


def commit(s, frame) -> None:
    s.open()
    s.write(frame)
    s.close()


def test_retry_after_is_honoured_then_every_record_once(manager, receiver):
    receiver.plan.append((503, {"Retry-After": "1"}, b"maintenance", 0))
    s = sink(manager, receiver.url, "store_and_forward")
    for i in range(3):
        commit(s, tags(300, start=i * 300))
    store = manager.store("line1", "erp")
    wait_for(lambda: len(receiver.records()) == 900, 30, what="900 records at the receiver")
    wait_for(lambda: store.pending()[1] == 0, 10, what="outbox drained")
    # the first request was answered 503 + Retry-After: 1; the retry came no sooner (the
    # forwarder's own back-off would have tried again after 0.2 s)
    assert receiver.times[1] - receiver.times[0] >= 0.95
    assert receiver.requests[1][1]["Idempotency-Key"] == receiver.requests[0][1]["Idempotency-Key"]
    values = sorted(r["value"] for r in receiver.records())
    assert values == [float(k) for k in range(900)]


def test_direct_delivers_inside_the_run(manager, receiver):
    commit(sink(manager, receiver.url, "direct"), tags(250))
    assert len(receiver.records()) == 250  # committed with the run: no waiting


def test_refused_record_is_quarantined_the_rest_arrives(manager, receiver):
    receiver.refuse = lambda record: record["value"] == 77.0
    s = sink(manager, receiver.url, "store_and_forward", max_tries=2)
    commit(s, tags(300))
    store = manager.store("line1", "erp")
    wait_for(lambda: store.pending()[1] == 0, 30, what="outbox drained")
    values = sorted(r["value"] for r in receiver.records())
    assert values == [float(k) for k in range(300) if k != 77]
    assert store.status()["quarantined_records"] == 1
