"""The `nats` destination against the NATS server (JetStream) on 127.0.0.1:4222: one copy in the
stream however often a delivery is repeated (Nats-Msg-Id), subjects from the template, record and
batch messages (JSON and Arrow), a server that is down or black-holed or resets mid-delivery
(tests/faultproxy.py) is retryable, a missing stream is not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.connectors import registry
from engine.connectors.nats_upstream import (
    NatsConnector,
    NatsSinkConfig,
    NatsTarget,
    default_stream_subjects,
    subject_expr,
)
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.outbox.keys import edge_id
from engine.outbox.target import DeliveryError, UpstreamTarget
from tests.conftest import require_service
from tests.faultproxy import FaultProxy
from tests.net import free_port

SERVER = "nats://127.0.0.1:4222"


# --- without a server ------------------------------------------------------------------------------


def test_registered_as_a_destination():
    assert registry.get("nats") is NatsConnector
    assert "nats" in registry.names("destination")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"subject": "a.*.b"}, "wildcards"),
        ({"subject": "a.>"}, "wildcards"),
        ({"subject": "a..b"}, "none empty"),
        ({"subject": "a.{tag"}, "placeholders"),
        ({"subject": "a b.c"}, "white space"),
        ({"create_stream": True}, "create_stream needs a stream"),
        ({"stream": "A.B"}, "stream name"),
        ({"password": "x"}, "password needs user"),
        ({"user": "u", "token": "t"}, "one of"),
        ({"servers": ["http://x:4222"]}, "nats://"),
        ({"subject": "{edge}.{tag}", "stream": "S", "create_stream": True}, "stream_subjects"),
    ],
)
def test_config_is_checked(config, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        NatsSinkConfig.model_validate(config)


def test_creds_file_needs_nkeys():
    import importlib.util

    if importlib.util.find_spec("nkeys") is not None:
        pytest.skip("nkeys is installed here")
    with pytest.raises(ValidationError, match="nkeys"):
        NatsSinkConfig.model_validate({"creds_file": "/etc/box.creds"})


def test_default_stream_subjects():
    assert default_stream_subjects("plant.{edge}.{pipeline}.{tag}") == ["plant.>"]
    assert default_stream_subjects("acme.site1.{edge}.x") == ["acme.site1.>"]
    assert default_stream_subjects("fixed.subject") == ["fixed.subject"]
    assert default_stream_subjects("{edge}.x") is None


def test_password_is_not_in_repr():
    cfg = NatsSinkConfig.model_validate({"user": "u", "password": "hunter2", "subject": "a.b"})
    assert "hunter2" not in repr(cfg)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=20))
def test_every_placeholder_is_one_token(tags):
    """Whatever a tag holds (dots, wildcards, spaces, nothing), it fills exactly one token."""
    import polars as pl

    frame = pl.DataFrame({"tag": tags}, schema={"tag": pl.String})
    expr = subject_expr("plant.{edge}.{pipeline}.{tag}", frame.columns, {"edge": "e.1", "pipeline": "p 1"})
    subjects = frame.select(expr.alias("s")).get_column("s").to_list()
    for subject in subjects:
        tokens = subject.split(".")
        assert len(tokens) == 4, subject
        assert tokens[:3] == ["plant", "e_1", "p_1"]
        assert all(t and not re.search(r"[\x00-\x20\x7f-\x9f\s*>]", t) for t in tokens), subject


def test_a_record_without_key_is_refused(tmp_path):
    t = target(tmp_path, subject="a.b", servers=[f"nats://127.0.0.1:{free_port()}"])
    for table in (pa.table({"v": [1]}), pa.table({"v": [1, 2], "_key": ["k", None]})):
        with pytest.raises(DeliveryError, match="_key") as err:
            t.deliver(table)
        assert not err.value.retryable
    t.close()


def test_unknown_placeholder_is_a_one_line_error(tmp_path):
    t = target(tmp_path, subject="x.{nope}", servers=[f"nats://127.0.0.1:{free_port()}"])
    t._nc = None
    with pytest.raises(DeliveryError) as err:
        t._messages(records(3), historical=False)
    assert not err.value.retryable
    assert "{nope}" in str(err.value) and "\n" not in str(err.value)


# --- helpers ------------------------------------------------------------------------------------


def records(n: int, start: int = 0, tags: int = 3) -> pa.Table:
    return pa.table(
        {
            "timestamp": pa.array([1_767_225_600_000_000 + i for i in range(start, start + n)], pa.timestamp("us", "UTC")),
            "tag": [f"line{i % tags}.temp" for i in range(start, start + n)],
            "value": [float(i) for i in range(start, start + n)],
            "_key": [f"edge-t/p/up/k{i}" for i in range(start, start + n)],
        }
    )  # fmt: skip


def target(tmp_path, **config: Any) -> NatsTarget:
    cfg = {"connect_timeout": 2, "ack_timeout": 3, **config}
    t = NatsConnector.make_target(cfg, RunContext(pipeline="pipe", data_dir=tmp_path), "up")
    assert isinstance(t, UpstreamTarget)
    return t


async def _with_js(fn):
    import nats

    nc = await nats.connect(SERVER)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def js(fn):
    return asyncio.run(_with_js(fn))


def stream_messages(stream: str) -> int:
    async def count(j):
        return (await j.stream_info(stream)).state.messages

    return js(count)


def stream_get(stream: str, seq: int):
    async def get(j):
        return await j.get_msg(stream, seq)

    return js(get)


@pytest.fixture
def stream(request):
    """A fresh stream name and subject prefix; the stream is deleted afterwards."""
    require_service("nats")
    name = f"T{uuid.uuid4().hex[:10].upper()}"
    yield name, f"t{name.lower()}"

    async def delete(j):
        with contextlib.suppress(Exception):
            await j.delete_stream(name)

    js(delete)


# --- against the server ---------------------------------------------------------------------------


@pytest.mark.services
def test_deliver_twice_one_copy(stream, tmp_path):
    name, prefix = stream
    t = target(tmp_path, stream=name, create_stream=True, subject=prefix + ".{edge}.{pipeline}.{tag}")
    table = records(500)
    try:
        t.open()
        t.deliver(table)
        assert (t.acked, t.duplicates) == (500, 0)
        t.deliver(table)  # the forwarder's retry after a lost ack: JetStream drops every copy
        assert (t.acked, t.duplicates) == (500, 500)
        t.deliver(records(100, start=450))  # half already there
        assert (t.acked, t.duplicates) == (550, 550)
    finally:
        t.close()
    assert stream_messages(name) == 550
    first = stream_get(name, 1)
    edge = edge_id(tmp_path)
    assert first.subject == f"{prefix}.{edge}.pipe.line0_temp"
    assert first.headers["Nats-Msg-Id"] == "edge-t/p/up/k0"
    body = json.loads(first.data)
    assert body == {"timestamp": "2026-01-01T00:00:00.000000Z", "tag": "line0.temp", "value": 0.0,
                    "_key": "edge-t/p/up/k0"}  # fmt: skip


@pytest.mark.services
def test_deliver_returns_only_when_every_ack_is_in(stream, tmp_path):
    """Many windows of acks (max_in_flight 64): when deliver returns, JetStream has acknowledged
    every message, counted as stored or duplicate."""
    name, prefix = stream
    t = target(tmp_path, stream=name, create_stream=True, subject=prefix + ".{tag}", max_in_flight=64)
    try:
        for n in (1, 7, 5000):
            t.deliver(records(n, start=10_000 * n))
        assert (t.acked, t.duplicates) == (5008, 0)
        t.deliver(records(5000, start=50_000_000))  # the last one again
        assert (t.acked, t.duplicates) == (5008, 5000)
    finally:
        t.close()


@pytest.mark.services
def test_a_new_target_after_a_restart_is_deduplicated_too(stream, tmp_path):
    name, prefix = stream
    table = records(200)
    for _ in range(2):  # as after a crash between "delivered" and "cursor saved"
        t = target(tmp_path, stream=name, create_stream=True, subject=prefix + ".{tag}")
        try:
            t.deliver(table)
        finally:
            t.close()
    assert t.duplicates == 200
    assert stream_messages(name) == 200


@pytest.mark.services
def test_created_stream_has_the_configured_window_and_subjects(stream, tmp_path):
    name, prefix = stream
    t = target(
        tmp_path, stream=name, create_stream=True, subject=prefix + ".{edge}.{tag}", duplicate_window_s=90
    )
    try:
        t.open()
    finally:
        t.close()

    async def info(j):
        return (await j.stream_info(name)).config

    config = js(info)
    assert config.subjects == [prefix + ".>"]
    assert config.duplicate_window == pytest.approx(90)


@pytest.mark.services
@pytest.mark.parametrize("fmt", ["json", "arrow"])
def test_batch_messages(stream, tmp_path, fmt):
    name, prefix = stream
    t = target(
        tmp_path, stream=name, create_stream=True, subject=prefix + ".{tag}", message="batch", batch_rows=40,
        batch_format=fmt,
    )  # fmt: skip
    table = records(300, tags=2)  # 150 rows per subject -> 4 messages each (40+40+40+30)
    try:
        t.deliver(table)
        t.deliver(table)
    finally:
        t.close()
    assert (t.acked, t.duplicates) == (8, 8)
    assert stream_messages(name) == 8
    seen: list[str] = []
    for seq in range(1, 9):
        msg = stream_get(name, seq)
        assert msg.headers["Nats-Msg-Id"].startswith("batch-")
        if fmt == "json":
            rows = json.loads(msg.data)
            keys = [r["_key"] for r in rows]
        else:
            batch = pa.ipc.open_stream(msg.data).read_all()
            keys = batch.column("_key").to_pylist()
        assert msg.subject in (f"{prefix}.line0_temp", f"{prefix}.line1_temp")
        seen += keys
    assert sorted(seen) == sorted(table.column("_key").to_pylist())


@pytest.mark.services
def test_historical_header(stream, tmp_path):
    name, prefix = stream
    t = target(tmp_path, stream=name, create_stream=True, subject=prefix + ".x")
    try:
        t.deliver(records(2), historical=True)
    finally:
        t.close()
    assert stream_get(name, 1).headers.get("Aggregator-Historical") == "true"


@pytest.mark.services
def test_stream_missing_is_not_retryable(stream, tmp_path):
    name, prefix = stream
    t = target(tmp_path, stream=name, subject=prefix + ".x")
    try:
        with pytest.raises(DeliveryError) as err:
            t.open()
        assert not err.value.retryable
        text = str(err.value)
        assert (
            "\n" not in text and f"stream '{name}' does not exist" in text and "create_stream: true" in text
        )
        # deliver() connecting by itself says the same, as retryable: the records are not at
        # fault, so the forwarder must not bisect them into quarantine
        with pytest.raises(DeliveryError, match="does not exist") as err:
            t.deliver(records(5))
        assert err.value.retryable
    finally:
        t.close()
    with pytest.raises(ConnectorError, match="does not exist"):
        target(tmp_path, stream=name, subject=prefix + ".x").check()


@pytest.mark.services
def test_no_stream_captures_the_subject_is_not_retryable(stream, tmp_path):
    _, prefix = stream
    t = target(tmp_path, subject=prefix + ".nobody.{tag}")
    try:
        with pytest.raises(DeliveryError, match="no JetStream stream captures") as err:
            t.deliver(records(50))
    finally:
        t.close()
    assert not err.value.retryable


@pytest.mark.services
def test_record_over_max_payload_is_not_retryable(stream, tmp_path):
    name, prefix = stream
    t = target(tmp_path, stream=name, create_stream=True, subject=prefix + ".x")
    big = pa.table({"blob": ["x" * (2 * 1024 * 1024)], "_key": ["big"]})
    try:
        with pytest.raises(DeliveryError, match="max_payload") as err:
            t.deliver(big)
    finally:
        t.close()
    assert not err.value.retryable


def test_server_down_is_retryable(tmp_path):
    port = free_port()  # nothing listens there
    t = target(tmp_path, servers=[f"nats://127.0.0.1:{port}"], subject="a.b")
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match="connection refused") as err:
            t.deliver(records(3))
    finally:
        t.close()
    assert err.value.retryable
    assert time.monotonic() - started < 10
    with pytest.raises(ConnectorError, match="connection refused"):
        target(tmp_path, servers=[f"nats://127.0.0.1:{port}"], subject="a.b").check()


# --- faults in flight (tests/faultproxy.py) -----------------------------------------------------------


def _through(proxy: FaultProxy, tmp_path, name: str, prefix: str, **config: Any) -> NatsTarget:
    return target(
        tmp_path, servers=[f"nats://127.0.0.1:{proxy.port}"], stream=name, create_stream=True,
        subject=prefix + ".{tag}", **config,
    )  # fmt: skip


@pytest.mark.services
def test_black_hole_is_retryable_then_the_retry_lands_once(stream, tmp_path):
    name, prefix = stream
    table = records(2000)
    with FaultProxy("127.0.0.1", 4222) as proxy:
        t = _through(proxy, tmp_path, name, prefix, ack_timeout=1.5)
        try:
            t.deliver(records(100))  # connected, stream made
            proxy.black_hole()  # the link accepts and never answers
            started = time.monotonic()
            with pytest.raises(DeliveryError) as err:
                t.deliver(table)
            assert err.value.retryable and "\n" not in str(err.value)
            assert time.monotonic() - started < 1.5 + 5  # bounded by ack_timeout, not the ping interval
            with pytest.raises(DeliveryError) as err:  # a new connection into the hole: no answer either
                t.deliver(table)
            assert err.value.retryable
            proxy.pass_through()
            t.deliver(table)  # the forwarder's retry, on a fresh connection
        finally:
            t.close()
    assert stream_messages(name) == 2000


@pytest.mark.services
def test_reset_mid_delivery_is_retryable_then_the_retry_lands_once(stream, tmp_path):
    name, prefix = stream
    table = records(3000)
    with FaultProxy("127.0.0.1", 4222) as proxy:
        t = _through(proxy, tmp_path, name, prefix)
        try:
            t.open()
            proxy.reset_after(100_000)  # about a third of the delivery reaches the server
            with pytest.raises(DeliveryError) as err:
                t.deliver(table)
            assert err.value.retryable
            proxy.pass_through()
            t.deliver(table)
        finally:
            t.close()
    assert 0 < t.duplicates < 3000  # part of the first attempt was stored, and dropped on the retry
    assert stream_messages(name) == 3000


@pytest.mark.services
def test_latency_below_ack_timeout_is_fine_above_it_retryable(stream, tmp_path):
    name, prefix = stream
    with FaultProxy("127.0.0.1", 4222) as proxy:
        t = _through(proxy, tmp_path, name, prefix, ack_timeout=3)
        try:
            t.open()
            proxy.latency(0.5)
            t.deliver(records(200))
            proxy.latency(5.0)  # the 5 s of latency: longer than the ack timeout
            with pytest.raises(DeliveryError, match="no ack") as err:
                t.deliver(records(200, start=200))
            assert err.value.retryable
            proxy.pass_through()
            t.deliver(records(200, start=200))
        finally:
            t.close()
    assert stream_messages(name) == 400


@pytest.mark.services
def test_subject_of_another_stream_is_not_retryable(stream, tmp_path):
    """`stream` names the stream a message must land in (Nats-Expected-Stream): a subject another
    stream captures is refused, not stored in the wrong place."""
    name, prefix = stream
    other = name + "B"

    async def make_other(j):
        await j.add_stream(name=other, subjects=[prefix + ".other.>"])

    js(make_other)
    try:
        t = target(tmp_path, stream=name, create_stream=True, stream_subjects=[prefix + ".mine.>"],
                   subject=prefix + ".other.{tag}")  # fmt: skip
        try:
            with pytest.raises(DeliveryError, match="expected stream does not match") as err:
                t.deliver(records(20))
        finally:
            t.close()
        assert not err.value.retryable
    finally:

        async def delete_other(j):
            await j.delete_stream(other)

        js(delete_other)


@pytest.mark.services
def test_a_dead_server_in_the_list_is_passed_over(stream, tmp_path):
    name, prefix = stream
    dead = f"nats://127.0.0.1:{free_port()}"
    t = target(tmp_path, servers=[dead, SERVER], stream=name, create_stream=True, subject=prefix + ".x")
    try:
        for _ in range(3):  # the client picks servers in random order: each time it lands
            t.deliver(records(10))
            t._drop()
    finally:
        t.close()
    assert stream_messages(name) == 10
