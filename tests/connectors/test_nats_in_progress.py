"""JetStream messages held for a slow commit (engine/connectors/nats_source.py): the source acks a
message only once the micro-batch holding it is committed, and JetStream re-delivers what is not
acked within `ack_wait_s`, so a commit slower than that stored the message twice. While it holds
them, the source now says they are in progress (+WPI) every ack_wait/3. Against the real NATS
server: messages held unacknowledged for 3 x ack_wait are delivered once, then acked."""

from __future__ import annotations

import time

import polars as pl
import pytest

from engine.connectors import registry
from engine.context import RunContext
from tests.connectors.mq_brokers import Broker, tag_bodies
from tests.waiting import wait_for

pytestmark = pytest.mark.services

ACK_WAIT_S = 3.0  # the keep-alive's margin is ack_wait/3 = 1 s of scheduling delay


def test_messages_held_past_ack_wait_are_kept_in_progress_not_redelivered():
    broker = Broker("nats_js")
    cls = registry.get("nats")
    config = cls.SourceConfig.model_validate(broker.source_config(ack_wait_s=ACK_WAIT_S))
    source = cls.make_source(config, RunContext(), "src")
    rows: list[int] = []
    tokens: list[object] = []

    def emit(frame: pl.DataFrame, ack: object = None) -> None:
        rows.append(frame.height)
        if ack is not None:
            tokens.append(ack)

    emit.takes_ack = True  # type: ignore[attr-defined]
    try:
        broker.publish(tag_bodies(5))
        source.start(emit)
        wait_for(lambda: sum(rows) >= 5, what="the 5 messages")
        held = time.monotonic()
        while time.monotonic() - held < 3 * ACK_WAIT_S:  # a commit this slow, nothing acked
            time.sleep(0.2)
        assert sum(rows) == 5, f"re-delivered while held: {sum(rows)} records for 5 messages"
        assert broker.redelivered() == 0
        assert broker.unacked() == 5
        source.acknowledge(tokens)
        wait_for(lambda: broker.unacked() == 0, what="the acks")
        assert sum(rows) == 5
    finally:
        source.stop()
        broker.cleanup()
