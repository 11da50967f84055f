"""The `webhook` destination against a real HTTP receiver written here (http.server on 127.0.0.1): it
stores each batch once per `Idempotency-Key` and can answer 429 with Retry-After, 5xx, 4xx or late.
The contract is in docs/upstream-nats-webhook.md."""

from __future__ import annotations

import base64
import email.utils
import json
import math
import threading
import time
from collections import deque
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.connectors import registry
from engine.connectors.webhook import (
    WebhookConnector,
    WebhookSinkConfig,
    WebhookTarget,
    json_array,
    json_frame,
    keys_digest,
    parse_retry_after,
)
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.outbox.target import DeliveryError, UpstreamTarget
from tests.net import free_port


class Receiver:
    """A webhook receiver: dedupes on Idempotency-Key; `plan` holds scripted answers (status,
    headers, body, delay before answering) used one per request before normal handling."""

    def __init__(self) -> None:
        self.stored: dict[str, list[dict]] = {}  # Idempotency-Key -> records
        self.requests: list[tuple[str, dict[str, str], dict]] = []  # method, headers, body
        self.duplicates = 0
        self.times: list[float] = []  # when each request came (monotonic)
        self.plan: deque[tuple[int, dict[str, str], bytes, float] | None] = deque()
        self.refuse: Any = None  # a record -> True refuses its whole batch with 422
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with receiver.lock:
                    receiver.requests.append((self.command, dict(self.headers), body))
                    receiver.times.append(time.monotonic())
                    planned = receiver.plan.popleft() if receiver.plan else None
                if planned is not None:
                    status, headers, text, delay = planned
                    if delay:
                        time.sleep(delay)
                    try:
                        self.send_response(status)
                        for k, v in headers.items():
                            self.send_header(k, v)
                        self.send_header("Content-Length", str(len(text)))
                        self.end_headers()
                        self.wfile.write(text)
                    except OSError:
                        pass  # the client gave up waiting
                    return
                if receiver.refuse is not None and any(receiver.refuse(r) for r in body["records"]):
                    text = b'{"error": "value 77 is out of range"}'
                    self.send_response(422)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                key = self.headers["Idempotency-Key"]
                with receiver.lock:
                    if key in receiver.stored:
                        receiver.duplicates += 1
                    else:
                        receiver.stored[key] = body["records"]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest?token=abc"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def records(self) -> list[dict]:
        with self.lock:
            return [r for batch in self.stored.values() for r in batch]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def records(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "timestamp": pa.array([1_767_225_600_000_000 + i for i in range(start, start + n)], pa.timestamp("us", "UTC")),
            "tag": [f"t{i % 4}" for i in range(start, start + n)],
            "value": [float(i) for i in range(start, start + n)],
            "_key": [f"edge/p/hook/t|{i}" for i in range(start, start + n)],
        }
    )  # fmt: skip


def target(url: str, **config: Any) -> WebhookTarget:
    t = WebhookConnector.make_target({"url": url, "timeout": 2, **config}, RunContext(pipeline="p"), "hook")
    assert isinstance(t, UpstreamTarget)
    return t


# --- the contract ------------------------------------------------------------------------------


def test_registered_as_a_destination():
    assert registry.get("webhook") is WebhookConnector


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "ftp://x"}, "http:// or https://"),
        ({"url": "http://x", "method": "GET"}, "method"),
        ({"url": "http://x", "headers": {"Idempotency-Key": "x"}}, "set by the destination"),
        ({"url": "http://x", "batch_rows": 0}, "batch_rows"),
    ],
)
def test_config_is_checked(config, message):
    with pytest.raises(ValidationError, match=message):
        WebhookSinkConfig.model_validate(config)


def test_deliver_twice_stored_once(receiver):
    ctx = RunContext(pipeline="p", secret=lambda name: {"HOOK_TOKEN": "Bearer s3cret"}[name])
    config = ctx.resolve_config(
        {"url": receiver.url, "batch_rows": 100, "headers": {"Authorization": {"secret": "HOOK_TOKEN"}}}
    )
    t = WebhookConnector.make_target(config, ctx, "hook")
    assert "s3cret" not in repr(t.config) and "token" not in t.describe_target()
    table = records(250)
    try:
        t.deliver(table)
        t.deliver(table)  # the forwarder's retry after a lost answer
    finally:
        t.close()
    assert len(receiver.requests) == 6 and receiver.duplicates == 3
    assert sorted(r["_key"] for r in receiver.records()) == sorted(table.column("_key").to_pylist())
    method, headers, body = receiver.requests[0]
    assert method == "POST"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == "application/json"
    assert (
        headers["Idempotency-Key"]
        == body["idempotency_key"]
        == keys_digest(table.column("_key").slice(0, 100))
    )
    assert body["historical"] is False and body["count"] == 100
    assert body["records"][1] == {"timestamp": "2026-01-01T00:00:00.000001Z", "tag": "t1", "value": 1.0,
                                  "_key": "edge/p/hook/t|1"}  # fmt: skip


def test_put_and_historical(receiver):
    t = target(receiver.url, method="PUT")
    try:
        t.deliver(records(3), historical=True)
    finally:
        t.close()
    method, _, body = receiver.requests[0]
    assert method == "PUT" and body["historical"] is True


def test_partial_failure_retried_whole_deduped_by_key(receiver):
    t = target(receiver.url, batch_rows=10)
    table = records(30)
    # the first request of the delivery is stored, the second answered 503: the whole table is
    # sent again, and the receiver drops the first request's copy by its Idempotency-Key
    receiver.plan.extend([None, (503, {}, b"busy", 0)])
    try:
        with pytest.raises(DeliveryError) as err:
            t.deliver(table)
        assert err.value.retryable
        t.deliver(table)
    finally:
        t.close()
    assert receiver.duplicates == 1
    keys = [r["_key"] for r in receiver.records()]
    assert sorted(keys) == sorted(table.column("_key").to_pylist())


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
def test_retryable_statuses(receiver, status):
    receiver.plan.append((status, {}, b"try later", 0))
    t = target(receiver.url)
    try:
        with pytest.raises(DeliveryError) as err:
            t.deliver(records(5))
    finally:
        t.close()
    assert err.value.retryable and err.value.retry_after is None
    assert f"HTTP {status}" in str(err.value) and "\n" not in str(err.value)
    assert "token=abc" not in str(err.value)  # the query string may hold a secret


def test_429_retry_after_seconds_and_date(receiver):
    receiver.plan.append((429, {"Retry-After": "7"}, b"", 0))
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    receiver.plan.append((503, {"Retry-After": when}, b"", 0))
    t = target(receiver.url)
    try:
        with pytest.raises(DeliveryError) as first:
            t.deliver(records(5))
        with pytest.raises(DeliveryError) as second:
            t.deliver(records(5))
        t.deliver(records(5))
    finally:
        t.close()
    assert first.value.retryable and first.value.retry_after == 7
    assert second.value.retryable and 110 <= second.value.retry_after <= 121
    assert len(receiver.records()) == 5


@pytest.mark.parametrize("status", [401, 403, 404, 405, 407])
def test_wrong_url_or_credentials_is_retryable_not_quarantined(receiver, status):
    receiver.plan.append((status, {}, b"who are you", 0))
    t = target(receiver.url)
    try:
        with pytest.raises(DeliveryError, match="check url, method and headers") as err:
            t.deliver(records(5))
    finally:
        t.close()
    assert err.value.retryable and f"HTTP {status}" in str(err.value)


@pytest.mark.parametrize("status", [400, 409, 410, 413, 422])
def test_other_4xx_is_not_retryable(receiver, status):
    receiver.plan.append((status, {}, b'{"error": "field value is not a number"}', 0))
    t = target(receiver.url)
    try:
        with pytest.raises(DeliveryError) as err:
            t.deliver(records(5))
    finally:
        t.close()
    assert not err.value.retryable
    text = str(err.value)
    assert f"HTTP {status}" in text and "not a number" in text and "\n" not in text


def test_redirect_is_not_followed(receiver):
    receiver.plan.append((307, {"Location": "http://elsewhere.example/x?sig=1"}, b"", 0))
    t = target(receiver.url)
    try:
        with pytest.raises(DeliveryError, match="set url to the final address") as err:
            t.deliver(records(1))
    finally:
        t.close()
    assert not err.value.retryable and "sig=1" not in str(err.value)


def test_slow_answer_is_bounded_by_timeout(receiver):
    receiver.plan.append((200, {}, b"", 3.0))  # answers after 3 s
    t = target(receiver.url, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match=r"no answer within 0.5 s") as err:
            t.deliver(records(5))
        elapsed = time.monotonic() - started
        t.deliver(records(5))  # a fresh connection after the timeout
    finally:
        t.close()
    assert err.value.retryable
    assert elapsed < 2.5
    assert len(receiver.records()) == 5


def test_refused_is_retryable():
    url = f"http://127.0.0.1:{free_port()}/x"
    t = target(url)
    try:
        with pytest.raises(DeliveryError, match="connection refused") as err:
            t.deliver(records(2))
    finally:
        t.close()
    assert err.value.retryable
    with pytest.raises(ConnectorError, match="connection refused"):
        target(url).check()


def test_check_reaches_the_receiver(receiver):
    target(receiver.url).check()  # any HTTP answer counts (the stub answers HEAD with 501)


# --- JSON and keys -------------------------------------------------------------------------------


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("12") == 12
    assert parse_retry_after("-3") == 0
    assert parse_retry_after("1e9") == 3600
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(
        30, abs=1
    )
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0
    for bad in (None, "", "soon", "nan"):
        assert parse_retry_after(bad) is None


def test_json_frame_shapes():
    table = pa.table(
        {
            "naive": pa.array([datetime(2026, 1, 2, 3, 4, 5, 6)], pa.timestamp("us")),
            "zoned": pa.array([datetime(2026, 1, 2, 3, 4, 5)], pa.timestamp("ms", "Europe/Berlin")),
            "blob": pa.array([b"\x00\xff"], pa.binary()),
            "nan": pa.array([math.nan]),
            "_key": ["k"],
        }
    )
    (row,) = json.loads(json_array(json_frame(table)))
    assert row == {"naive": "2026-01-02T03:04:05.000006", "zoned": "2026-01-02T03:04:05.000000Z",
                   "blob": base64.b64encode(b"\x00\xff").decode(), "nan": None, "_key": "k"}  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.text()),
            st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
            st.integers(min_value=-(2**53), max_value=2**53),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_json_round_trip(rows):
    texts, floats, ints = (list(c) for c in zip(*rows, strict=True))
    table = pa.table({"text": pa.array(texts, pa.string()), "f": pa.array(floats, pa.float64()), "i": ints})
    back = json.loads(json_array(json_frame(table)))
    assert [r["text"] for r in back] == texts
    assert [r["f"] for r in back] == floats
    assert [r["i"] for r in back] == ints


@given(st.lists(st.text(), min_size=1, max_size=20, unique=True))
def test_idempotency_key_stable_and_order_sensitive(keys):
    assert keys_digest(pa.array(keys)) == keys_digest(pa.chunked_array([keys]))
    if len(keys) > 1:
        assert keys_digest(pa.array(keys)) != keys_digest(pa.array(keys[1:]))


def test_https_certificate_is_checked_unless_verify_tls_false(receiver, tmp_path):
    import ssl

    from tests.upstream.test_nats_auth import _pki

    pki = _pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki["server"]), str(pki["server_key"]))
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    url = receiver.url.replace("http://", "https://")
    t = target(url)  # our test CA is not one the system trusts
    try:
        with pytest.raises(DeliveryError, match="certificate") as err:
            t.deliver(records(3))
        assert err.value.retryable
    finally:
        t.close()
    t = target(url, verify_tls=False)
    try:
        t.deliver(records(3))
    finally:
        t.close()
    assert len(receiver.records()) == 3
