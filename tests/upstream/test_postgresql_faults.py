"""Faults in flight between the target and the real PostgreSQL, through tests/faultproxy.py: a
reset mid-batch, a reset that loses the COMMIT's answer, 5 s of latency, a black hole (on an open
connection and on connect), and a refused port. Every failure is retryable and bounded in time, and
after the link returns a redelivery leaves exactly one copy."""

from __future__ import annotations

import time

import pytest

from engine.outbox.target import DeliveryError
from tests.conftest import require_service
from tests.faultproxy import FaultProxy
from tests.upstream.pg import count, drop, keys, table_name, tags, target
from tests.waiting import wait_for

pytestmark = pytest.mark.services


@pytest.fixture
def table():
    require_service("postgresql")
    name = table_name()
    yield name
    drop(name)


@pytest.fixture
def proxy():
    with FaultProxy("127.0.0.1", 5432) as p:
        yield p


def _through(proxy: FaultProxy, table: str, **overrides):
    return target(table, host="127.0.0.1", port=proxy.port, **overrides)


def _fails_retryable(t, batch, within: float) -> DeliveryError:
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        t.deliver(batch)
    elapsed = time.monotonic() - started
    assert info.value.retryable is True, str(info.value)
    assert elapsed < within, f"took {elapsed:.1f} s"
    assert "\n" not in str(info.value)
    return info.value


def test_reset_mid_batch_then_one_copy(table, proxy):
    t = _through(proxy, table)
    try:
        t.deliver(tags(0, 100))  # table made, connection open
        proxy.reset_after(200_000)  # the next batch is ~1.2 MB of COPY data: cut inside it
        batch = tags(100, 20_000)
        _fails_retryable(t, batch, within=30)
        assert proxy.resets >= 1
        assert count(table) == 100  # the half-sent transaction was rolled back by the server
        proxy.pass_through()
        t.deliver(batch)
    finally:
        t.close()
    assert keys(table) == sorted(tags(0, 20_100).column("_key").to_pylist())


COPY_DONE = b"c\x00\x00\x00\x04"  # the frontend's CopyDone message: the COPY's own commit


@pytest.mark.parametrize(
    ("first", "start", "pattern"),
    [
        (10, 10, COPY_DONE),  # new keys: COPY straight into the table, committed by CopyDone
        (500, 0, b"COMMIT\x00"),  # half the keys already there: stage, INSERT ... ON CONFLICT, COMMIT
    ],
    ids=["direct", "stage"],
)
def test_commit_reached_the_server_but_its_answer_was_lost(table, proxy, first, start, pattern):
    """The crash between 'delivered' and 'acknowledged': the forwarder sends again, the server
    keeps one copy."""
    t = _through(proxy, table)
    try:
        t.deliver(tags(0, first))
        proxy.reset_on(pattern, at_end=True)
        batch = tags(start, 1000 - start)
        _fails_retryable(t, batch, within=30)
        assert proxy.resets == 1
        wait_for(lambda: count(table) == 1000, what="the server to commit the transaction it received")
        proxy.pass_through()
        t.deliver(batch)  # the redelivery
    finally:
        t.close()
    assert count(table) == 1000


@pytest.mark.slow
def test_five_seconds_of_latency_still_delivers(table, proxy):
    t = _through(proxy, table, statement_timeout_s=30)
    try:
        t.deliver(tags(0, 10))
        proxy.latency(5.0)
        started = time.monotonic()
        t.deliver(tags(10, 1000))
        assert time.monotonic() - started >= 5.0
    finally:
        t.close()
    assert count(table) == 1010


def test_latency_beyond_the_statement_timeout_is_bounded(table, proxy):
    t = _through(proxy, table, statement_timeout_s=1)
    try:
        t.deliver(tags(0, 10))
        proxy.latency(5.0)
        error = _fails_retryable(t, tags(10, 100), within=4.5)
        assert "no answer within" in str(error)
        proxy.pass_through()
        t.deliver(tags(10, 100))
    finally:
        t.close()
    assert count(table) == 110


def test_black_hole_on_an_open_connection_does_not_hang(table, proxy):
    t = _through(proxy, table, statement_timeout_s=1, connect_timeout=1)
    try:
        t.deliver(tags(0, 10))
        proxy.black_hole()
        _fails_retryable(t, tags(10, 100), within=5)
        _fails_retryable(t, tags(10, 100), within=5)  # reconnecting into the hole: connect_timeout
        proxy.pass_through()
        t.deliver(tags(10, 100))
    finally:
        t.close()
    assert count(table) == 110


def test_black_hole_on_connect_is_bounded_by_connect_timeout(table, proxy):
    proxy.black_hole()
    t = _through(proxy, table, connect_timeout=1)
    error = _fails_retryable(t, tags(0, 1), within=5)
    assert "cannot connect" in str(error)


def test_refused_then_back(table, proxy):
    t = _through(proxy, table, connect_timeout=2)
    try:
        t.deliver(tags(0, 10))
        proxy.refuse()  # the server is down: its open connection is reset, new ones refused
        _fails_retryable(t, tags(10, 10), within=5)
        _fails_retryable(t, tags(10, 10), within=5)
        proxy.pass_through()
        t.deliver(tags(10, 10))
    finally:
        t.close()
    assert count(table) == 20


def test_proxy_passes_through_untouched(table, proxy):
    t = _through(proxy, table)
    try:
        t.deliver(tags(0, 50_000))
    finally:
        t.close()
    assert count(table) == 50_000 and proxy.connections == 1
