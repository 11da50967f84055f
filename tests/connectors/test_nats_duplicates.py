"""JetStream copies of a message the source holds or has committed are not emitted twice
(engine/connectors/nats_source.py, `_first_copies`). A loaded CI run stored a message twice and
missed another: nats-server 2.9.10 re-delivered, after a restart, one stream sequence twice in one
pull (the second copy with delivery count 1) and another not at all until its ack_wait ran out.

Against the real NATS server, each way a copy comes: while its first copy is held for a slow commit
(the in-progress keeper stopped, as a stalled loop would), after it was committed (its ack lost), and
held past the keeper's horizon (a failed micro-batch: taken again, the way it is recovered). The
ack subject's parse is checked against nats-py's own."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from engine.connectors import nats_source, registry
from engine.context import RunContext
from tests.connectors.mq_brokers import Broker, tag_bodies
from tests.waiting import wait_for

ACK_WAIT_S = 1.0


class Run:
    """A JetStream source of the test's broker, emitting into a list (acks held until `commit`)."""

    def __init__(self, broker: Broker, **extra):
        cls = registry.get("nats")
        config = cls.SourceConfig.model_validate(broker.source_config(ack_wait_s=ACK_WAIT_S, **extra))
        self.source = cls.make_source(config, RunContext(), "src")
        self.values: list[float] = []
        self.tokens: list[object] = []

        def emit(frame: pl.DataFrame, ack: object = None) -> None:
            self.values.extend(frame.get_column("value").to_list())
            if ack is not None:
                self.tokens.append(ack)

        emit.takes_ack = True  # type: ignore[attr-defined]
        self.emit = emit

    def __enter__(self) -> Run:
        self.source.start(self.emit)
        return self

    def __exit__(self, *exc) -> None:
        self.source.stop()

    def wait_values(self, n: int, timeout: float = 20.0, what: str = "the messages") -> None:
        wait_for(lambda: len(self.values) >= n, timeout=timeout, what=f"{what} ({n} values)")

    def wait_duplicates(self, n: int) -> None:
        wait_for(lambda: self.source.counters["duplicates"] >= n, timeout=30, what=f"{n} copies dropped")

    def commit(self) -> None:
        tokens, self.tokens = self.tokens, []
        self.source.acknowledge(tokens)


@pytest.fixture
def broker():
    b = Broker("nats_js")
    yield b
    b.cleanup()


async def _no_keeper(self) -> None:
    """The in-progress keeper stopped (a stalled event loop, a failed send): JetStream re-delivers
    what is held past ack_wait."""


@pytest.mark.services
def test_a_copy_of_a_held_message_is_dropped_and_its_first_copy_acked_settles_it(broker, monkeypatch):
    monkeypatch.setattr(nats_source.NatsSource, "_keep_in_progress", _no_keeper)
    broker.publish(tag_bodies(5))
    with Run(broker) as run:
        run.wait_values(5)
        run.wait_duplicates(5)  # held, not committed: each comes again once ack_wait has run out
        assert sorted(run.values) == [float(i) for i in range(5)]
        assert broker.unacked() == 5  # a dropped copy is not acked: its first copy is not committed
        run.commit()
        wait_for(lambda: broker.unacked() == 0, what="the acks")
        assert sorted(run.values) == [float(i) for i in range(5)]


@pytest.mark.services
def test_a_copy_of_a_committed_message_is_acked_and_dropped(broker, monkeypatch):
    lost: list[int] = []
    send = nats_source.NatsSource._send_acks

    def lose_the_first(self, acks):  # committed, but its acks never reach the server
        if not lost:
            lost.append(len(acks))
            return False
        return send(self, acks)

    monkeypatch.setattr(nats_source.NatsSource, "_send_acks", lose_the_first)
    broker.publish(tag_bodies(5))
    with Run(broker) as run:
        run.wait_values(5)
        run.commit()
        assert lost == [5]
        run.wait_duplicates(5)
        wait_for(lambda: broker.unacked() == 0, what="the copies' acks")
        assert sorted(run.values) == [float(i) for i in range(5)]


@pytest.mark.services
def test_a_message_held_past_the_keepers_horizon_is_taken_again(broker, monkeypatch):
    monkeypatch.setattr(nats_source, "KEEP_IN_PROGRESS", 2)  # the horizon: 2 x ack_wait
    broker.publish(tag_bodies(3))
    with Run(broker) as run:
        run.wait_values(3)
        # never committed (its micro-batch failed): kept in progress for 2 s, then given up, and
        # the copy JetStream hands over after that is emitted again
        run.wait_values(6, timeout=30, what="the messages again")
        assert sorted(run.values) == sorted([float(i) for i in range(3)] * 2)
        run.commit()
        wait_for(lambda: broker.unacked() == 0, what="the acks")


@given(
    stream=st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    consumer=st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    delivered=st.integers(1, 10**6),
    seq=st.integers(1, 2**63 - 1),
    cseq=st.integers(1, 2**63 - 1),
    pending=st.integers(0, 10**9),
    domain=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)),
)
def test_the_stream_sequence_is_read_as_nats_py_reads_it(
    stream, consumer, delivered, seq, cseq, pending, domain
):
    tail = f"{stream}.{consumer}.{delivered}.{seq}.{cseq}.1796448506111744739.{pending}"
    reply = f"$JS.ACK.{tail}" if domain is None else f"$JS.ACK.{domain}.ACCHASH.{tail}.r4nd0m"
    ours = nats_source.stream_sequence(reply)
    assert ours == seq == Msg(None, subject="x", reply=reply).metadata.sequence.stream
