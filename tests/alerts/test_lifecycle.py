"""Every condition raises and clears, on the engine's events and the clock; an open alert is kept
once per rule and subject; raise -> acknowledge -> clear; the state survives a restart; webhook
notifications reach a real HTTP receiver with their Idempotency-Key."""

from __future__ import annotations

import time

import polars as pl
import pyarrow as pa
import pytest

from engine.alerts.evaluator import AlertEngine
from engine.errors import DataError
from engine.outbox.manager import manager_for
from tests.upstream.test_webhook import Receiver
from tests.waiting import wait_for


def _engine(data, alerts, notifications=None, **kw):
    doc = {"name": "line1", "error_handling": {"alerts": alerts, "notifications": notifications or {}}}
    engine = AlertEngine(data, spec_of=lambda name: doc if name == "line1" else None, ticker=False, **kw)
    engine.on_event({"event": "run_started", "run_id": "r1", "pipeline": "line1"})
    return engine


def _open(engine):
    return [(a["kind"], a["subject"], a["state"]) for a in engine.store.list()]


@pytest.fixture
def data(tmp_path):
    yield tmp_path / "data"
    manager_for(tmp_path / "data").close()


def test_pipeline_failed_and_warning_raise_and_clear(data):
    events = []
    engine = _engine(
        data,
        [
            {"condition": "pipeline failed", "severity": "critical"},
            {"condition": "pipeline warning", "severity": "info"},
        ],
        emit=events.append,
    )
    engine.on_event({"event": "run_finished", "run_id": "r1", "status": "failed", "error": "boom"})
    engine.on_event({"event": "run_started", "run_id": "r2", "pipeline": "line1"})
    engine.on_event({"event": "run_finished", "run_id": "r2", "status": "failed", "error": "boom again"})
    [alert] = engine.store.list()  # de-duplicated: one open alert per rule and subject
    assert (alert["kind"], alert["severity"], alert["message"]) == (
        "pipeline_failed",
        "critical",
        "run r2 failed: boom again",
    )
    engine.on_event({"event": "run_started", "run_id": "r3", "pipeline": "line1"})
    engine.on_event({"event": "run_finished", "run_id": "r3", "status": "warning"})
    assert _open(engine) == [("pipeline_warning", "line1", "active")]  # failed cleared, warning raised
    engine.on_event({"event": "run_started", "run_id": "r4", "pipeline": "line1"})
    engine.on_event({"event": "run_finished", "run_id": "r4", "status": "success"})
    assert _open(engine) == []
    assert [(e["action"], e["condition"]) for e in events] == [
        ("raised", "pipeline failed"), ("cleared", "pipeline failed"),
        ("raised", "pipeline warning"), ("cleared", "pipeline warning"),
    ]  # fmt: skip
    assert [a["state"] for a in engine.store.list(active=False)] == ["cleared", "cleared"]
    engine.close()


def test_source_lost_for_n_seconds(data):
    engine = _engine(data, [{"condition": "source lost > 0.3s"}])
    engine.on_event(
        {"event": "source_state", "run_id": "r1", "node": "plc", "state": "lost", "detail": "reset"}
    )
    engine.tick()
    assert _open(engine) == []  # not yet 0.3 s
    wait_for(lambda: (engine.tick(), _open(engine))[1], 10, what="the source-lost alert")
    assert _open(engine) == [("source_lost", "plc", "active")]
    engine.on_event({"event": "source_state", "run_id": "r1", "node": "plc", "state": "connected"})
    assert _open(engine) == []
    engine.close()


def test_tag_threshold_for_a_duration_on_batches(data):
    engine = _engine(data, [{"condition": "tag T* outside [0, 100] for 10s", "severity": "critical"}])

    def batch(tag, seconds, values):
        return pl.DataFrame(
            {
                "tag": [tag] * len(values),
                "timestamp": pl.Series([s * 1_000_000 for s in seconds], dtype=pl.Int64).cast(
                    pl.Datetime("us", "UTC")
                ),
                "value": values,
            }
        )

    engine.observe(batch("T1", [0, 4, 8], [50.0, 120.0, 130.0]))  # beyond since t=4, for 4 s
    assert _open(engine) == []
    engine.observe(batch("T1", [12, 13], [140.0, 150.0]))  # since t=4 carried over: 9 s
    assert _open(engine) == []
    engine.observe(batch("T1", [14], [-1.0]))  # 10 s beyond
    [alert] = engine.store.list()
    assert (alert["subject"], alert["value"], alert["severity"]) == ("T1", -1.0, "critical")
    engine.observe(batch("T2", [0, 1], [float("nan"), 5.0]))  # another tag, within: nothing
    engine.observe(batch("T1", [15, 16], [200.0, 99.0]))  # back within at the batch's end
    assert _open(engine) == []
    engine.observe(batch("T1", [20, 25, 29], [101.0, 50.0, 101.0]))  # the run broke: since restarts
    engine.observe(batch("T1", [38], [101.0]))
    assert _open(engine) == []
    engine.observe(batch("T1", [39], [101.0]))
    assert _open(engine) == [("tag", "T1", "active")]
    # back within for a moment inside one batch: that alert clears; the new run is too short yet
    engine.observe(batch("T1", [40, 41, 45], [150.0, 50.0, 150.0]))
    assert _open(engine) == []
    engine.observe(batch("T1", [51], [150.0]))  # beyond since t=45: 6 s
    assert _open(engine) == []
    engine.observe(batch("T1", [55], [150.0]))
    assert [a["state"] for a in engine.store.list(active=False, pipeline="line1")] == [
        "active",
        "cleared",
        "cleared",
    ]
    engine.close()


def test_tag_threshold_from_the_live_ring_buffer(data):
    from engine.store.ring_buffer import forget_ring_buffers, ring_buffers

    ring = ring_buffers(data)
    try:
        engine = _engine(data, [{"condition": "tag boiler > 80"}])
        now = int(time.time() * 1e6)
        ring.append(
            pl.DataFrame(
                {
                    "tag": ["boiler", "boiler"],
                    "timestamp": pl.Series([now, now + 1], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                    "value": [70.0, 85.0],
                    "quality": ["good", "good"],
                }
            )
        )
        engine.tick()
        assert _open(engine) == [("tag", "boiler", "active")]
        ring.append(
            pl.DataFrame(
                {
                    "tag": ["boiler"],
                    "timestamp": pl.Series([now + 2], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                    "value": [60.0],
                    "quality": ["good"],
                }
            )
        )
        engine.tick()
        assert _open(engine) == []
        engine.close()
    finally:
        forget_ring_buffers(data)


def test_outbox_age_fill_and_drops(data):
    engine = _engine(
        data,
        [
            {"condition": "outbox age > 0.2s"},
            {"condition": "outbox fill > 0.0001%"},
            {"condition": {"type": "drops", "clear_after_s": 0.2}},
        ],
    )
    store = manager_for(data).store("line1", "pg", "postgresql")
    table = pa.table({"_key": ["a"], "value": [1.0]})
    store.commit((lambda first: table, 1), None)
    engine.tick()
    assert _open(engine) == [("outbox_fill", "outbox pg", "active")]
    wait_for(lambda: (engine.tick(), len(_open(engine)) == 2)[1], 10, what="the outbox-age alert")
    [batch] = store.read(max_rows=10)
    store.delivered([batch.seq], 1)
    engine.tick()
    assert _open(engine) == []
    engine.on_event(
        {
            "event": "alarm",
            "kind": "rows_dropped",
            "run_id": "r1",
            "node": "opc",
            "rows": 7,
            "reason": "queue full",
        }
    )
    assert [(a["subject"], a["value"]) for a in engine.store.list()] == [("opc", 7.0)]
    wait_for(lambda: (engine.tick(), not _open(engine))[1], 10, what="the drops alert to clear")
    # the outbox's cap drops the oldest records: counted by the outbox, alerted here
    big = pa.table({"_key": [f"k{i}" for i in range(2000)], "value": [float(i) for i in range(2000)]})
    for _ in range(3):
        store.commit(
            (lambda first: big, big.num_rows), None, max_bytes=40_000, gap=lambda tables, first: None
        )
    assert store.status()["dropped_records"] > 0
    engine.tick()
    drops = [a for a in engine.store.list() if a["kind"] == "drops"]
    assert [(a["subject"], a["message"].split(" (")[1]) for a in drops] == [
        ("outbox pg", "the outbox's cap)")
    ]
    engine.close()


def test_acknowledge_then_clear_and_restart_keeps_state(data):
    engine = _engine(data, [{"condition": "failed"}, {"condition": "source lost > 0s"}])
    engine.on_event({"event": "run_finished", "run_id": "r1", "status": "failed"})
    [alert] = engine.store.list()
    acked = engine.acknowledge(alert["id"], "maria", "PLC swapped, rerun at 10:00")
    assert (acked["state"], acked["acknowledged_by"], acked["ack_note"]) == (
        "acknowledged",
        "maria",
        "PLC swapped, rerun at 10:00",
    )
    assert acked["acknowledged_at"] >= acked["raised_at"]
    with pytest.raises(DataError, match="no alert with id 999"):
        engine.acknowledge(999, "x")
    engine.close()

    again = _engine(data, [{"condition": "failed"}])  # a restart: the same file
    [kept] = again.store.list()
    assert (kept["id"], kept["state"], kept["acknowledged_by"]) == (alert["id"], "acknowledged", "maria")
    again.on_event({"event": "run_finished", "run_id": "r1", "status": "failed"})  # still one
    assert len(again.store.list()) == 1
    again.on_event({"event": "run_started", "run_id": "r2", "pipeline": "line1"})
    again.on_event({"event": "run_finished", "run_id": "r2", "status": "success"})
    assert again.store.list() == []
    [closed] = again.store.list(active=False)
    assert closed["state"] == "cleared" and closed["acknowledged_by"] == "maria" and closed["cleared_at"]
    with pytest.raises(DataError, match="cleared already"):
        again.acknowledge(closed["id"], "x")
    again.close()


def test_webhook_notifications_with_idempotency_keys(data):
    receiver = Receiver()
    try:
        engine = _engine(
            data,
            [{"condition": "failed", "severity": "critical", "notify": "webhook"}],
            {"webhook": receiver.url},
        )
        engine.on_event({"event": "run_finished", "run_id": "r1", "status": "failed", "error": "boom"})
        engine.on_event({"event": "run_started", "run_id": "r2", "pipeline": "line1"})
        engine.on_event({"event": "run_finished", "run_id": "r2", "status": "success"})
        got = wait_for(
            lambda: len(receiver.records()) == 2 and receiver.records(), 20, what="two notifications"
        )
        assert [(r["action"], r["severity"], r["pipeline"]) for r in got] == [
            ("raised", "critical", "line1"),
            ("cleared", "critical", "line1"),
        ]
        assert got[0]["message"] == "run r1 failed: boom" and got[0]["_key"].startswith(
            f"alert-{got[0]['alert_id']}-raised-"
        )
        assert all(h["Idempotency-Key"] for _, h, _ in receiver.requests) and receiver.duplicates == 0
        wait_for(lambda: engine.notifier.figures()["webhook_delivered"] == 2, 10, what="the delivered count")
        engine.close()
    finally:
        receiver.close()


def test_after_a_restart_a_drop_alert_still_clears_and_a_removed_rule_clears_its_alert(data):
    engine = _engine(data, [{"condition": {"type": "drops", "clear_after_s": 0.2}}, {"condition": "failed"}])
    engine.on_event({"event": "alarm", "kind": "rows_dropped", "run_id": "r1", "node": "opc", "rows": 3})
    engine.on_event({"event": "run_finished", "run_id": "r1", "status": "failed"})
    assert len(engine.store.list()) == 2
    engine.close()

    again = _engine(data, [{"condition": {"type": "drops", "clear_after_s": 0.2}}])  # 'failed' was removed
    assert [(a["kind"], a["subject"]) for a in again.store.list()] == [("drops", "opc")]
    [gone] = [a for a in again.store.list(active=False) if a["kind"] == "pipeline_failed"]
    assert gone["state"] == "cleared" and gone["message"].endswith("(the rule was removed)")
    wait_for(lambda: (again.tick(), not again.store.list())[1], 10, what="the drop alert to clear")
    again.close()
