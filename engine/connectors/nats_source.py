"""The `nats` connector's source side (issue 13): core NATS subjects, or a JetStream durable pull
consumer with explicit acks. The destination side is engine/connectors/nats_upstream.py; this
module reuses its asyncio loop thread (`_Loop`) and its reasons; `NatsSourceConfig` lives there,
next to the destination's config, so that the one `nats` connector class holds both roles.

- Core (`jetstream: false`): a subscription (optionally in a `queue_group`). Core NATS has no
  acknowledgement: a message the pipeline has not committed when it crashes is gone, and messages
  published while the source is away are never seen. Use JetStream where that matters.
- JetStream (`jetstream: true`): a durable pull consumer (`durable`, created on `stream` when
  missing, `AckExplicit`); `fetch` takes up to `batch_max_messages` at a time, and each message is
  acked only after the micro-batch holding it is committed. While it waits for that commit, the
  source tells JetStream every `ack_wait_s / 3` that it is still being worked on (`in_progress`,
  +WPI), so a commit slower than `ack_wait_s` (a restart's first, a slow destination) does not
  have it re-delivered and stored twice; for at most KEEP_IN_PROGRESS x `ack_wait_s`, after which
  JetStream re-delivers it (a micro-batch that failed, or a batch the queue dropped, is never
  acknowledged). An unacked message comes again after that, or at the next start.
- A message JetStream hands over again while this process holds it or has committed it is not
  emitted twice (`duplicates`): the source remembers the stream sequences it took, the last
  2 x `max_ack_pending` of them. One held for a commit is dropped unacked (its first copy's ack
  settles it); one committed is acked again and dropped. nats-server 2.9.10 (Debian 12's) was seen
  re-delivering, after a restart, one message twice in one pull and another not at all (it
  counted that one as delivered: it came after `ack_wait_s`); a re-delivery that crosses an ack
  is the other way it happens. Held past the keeper's horizon (a failed micro-batch), it is taken
  again: that is how a failed batch is recovered.

The connection does not reconnect by itself (as the destination's): a lost one turns the session
`lost`, and the source connects afresh with back-off (`reconnecting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from typing import Any

from engine.connectors.mq_common import Message, MqSource
from engine.connectors.nats_upstream import NatsSourceConfig, _Loop, _reason, _safe_url
from engine.context import RunContext
from engine.errors import ConnectorError

KEEP_IN_PROGRESS = 10  # x ack_wait_s: how long a held message is kept from re-delivery at most
COMMITTED = -1.0  # in NatsSource._taken: the message's micro-batch is committed


def stream_sequence(reply: str) -> int:
    """A JetStream message's stream sequence, from its ack subject: `$JS.ACK.<stream>.<consumer>.
    <delivered>.<stream seq>...` (9 tokens), or with a domain and account hash (12; 11 from older
    servers) as nats-py reads it. ~0.3 us, against ~5 us for nats-py's `Msg.metadata`."""
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


class NatsSource(MqSource):
    config: NatsSourceConfig

    def __init__(self, config: NatsSourceConfig, ctx: RunContext, name: str):
        super().__init__(config, ctx, name)
        self.where = ", ".join(_safe_url(s) for s in config.servers) + f" subject {config.subject}"
        self.durable = config.durable or f"{ctx.pipeline or 'aggregator'}-{name}".replace(".", "_")
        self._loop: _Loop | None = None
        self._nc: Any = None
        self._psub: Any = None
        self._sub: Any = None
        self._core: deque[Message] = deque()
        self._keeper: asyncio.Task | None = None  # JetStream: `in_progress` for held messages
        self._arrived = threading.Condition()
        # JetStream: stream sequence -> when it was taken (monotonic), or COMMITTED; the newest
        # 2 x max_ack_pending (insertion order), to drop a copy handed over again
        self._taken: dict[int, float] = {}
        self._taken_max = 2 * config.max_ack_pending + config.batch_max_messages
        self._taken_lock = threading.Lock()

    def _reason(self, exc: BaseException) -> str:
        return _reason(exc, self.config.connect_timeout)

    def _run_async(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        return self._loop.run(coro, timeout)

    def _connect(self) -> None:
        if self._loop is None:
            self._loop = _Loop(f"nats-source-{self.name}")
        self._run_async(self._aconnect(), self.config.connect_timeout * (len(self.config.servers) + 1) + 15)

    async def _aconnect(self) -> None:
        import nats
        import nats.js.api

        cfg = self.config
        errors: list[BaseException] = []

        async def on_error(exc: BaseException) -> None:
            errors.append(exc)

        options: dict[str, Any] = {
            "servers": cfg.servers,
            "name": f"data-aggregator {self.ctx.pipeline}/{self.name}",
            "connect_timeout": cfg.connect_timeout,
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.1,
            "error_cb": on_error,
        }
        if cfg.user is not None:
            options["user"], options["password"] = cfg.user, cfg.password
        if cfg.token is not None:
            options["token"] = cfg.token
        if cfg.tls is not None:
            import ssl

            context = ssl.create_default_context(
                cafile=str(self.ctx.resolve_path(cfg.tls.ca_file)) if cfg.tls.ca_file else None
            )
            if cfg.tls.cert_file and cfg.tls.key_file:
                context.load_cert_chain(
                    str(self.ctx.resolve_path(cfg.tls.cert_file)),
                    str(self.ctx.resolve_path(cfg.tls.key_file)),
                )
            options["tls"] = context
        try:
            nc = await nats.connect(**options)
        except Exception as exc:
            if errors:
                raise errors[-1] from None
            raise exc
        try:
            if cfg.jetstream:
                js = nc.jetstream(timeout=cfg.connect_timeout)
                policy = {
                    "all": nats.js.api.DeliverPolicy.ALL,
                    "new": nats.js.api.DeliverPolicy.NEW,
                    "last": nats.js.api.DeliverPolicy.LAST,
                }[cfg.deliver_policy]
                consumer = nats.js.api.ConsumerConfig(
                    ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                    ack_wait=cfg.ack_wait_s,
                    max_ack_pending=cfg.max_ack_pending,
                    deliver_policy=policy,
                )
                self._psub = await js.pull_subscribe(
                    cfg.subject, durable=self.durable, stream=cfg.stream, config=consumer
                )
                self._keeper = asyncio.get_running_loop().create_task(self._keep_in_progress())
            else:
                self._core.clear()

                async def on_message(msg: Any) -> None:
                    if len(self._core) >= cfg.max_pending_messages:
                        self.counters["dropped"] += 1
                        return
                    self._core.append(Message(msg.data, msg.subject))
                    if len(self._core) >= cfg.batch_max_messages:
                        with self._arrived:
                            self._arrived.notify()

                self._sub = await nc.subscribe(cfg.subject, queue=cfg.queue_group or "", cb=on_message)
            await nc.flush(timeout=cfg.connect_timeout)
        except BaseException:
            await nc.close()
            raise
        self._nc = nc

    async def _keep_in_progress(self) -> None:
        """Every ack_wait/3, `in_progress` for each message emitted at least that long ago and not
        yet acknowledged: JetStream restarts its ack_wait timer, so a message waits for a slow
        commit instead of coming twice. Ends with the connection (its task is cancelled by
        `_close`; a failed send means the link is gone, and the source reconnects)."""
        ack_wait = self.config.ack_wait_s
        every = ack_wait / 3
        while True:
            await asyncio.sleep(every)
            for msg in self.held_acks(every, ack_wait * KEEP_IN_PROGRESS):
                try:
                    await msg.in_progress()
                except Exception:
                    return

    def _fetch(self, limit: int, wait_s: float) -> list[Message]:
        import nats.errors

        nc = self._nc
        if nc is None or nc.is_closed or not nc.is_connected:
            raise ConnectionError("the connection to NATS closed")
        if self._psub is not None:
            try:
                msgs = self._run_async(self._psub.fetch(limit, timeout=wait_s), wait_s + 30)
            except (nats.errors.TimeoutError, TimeoutError):
                if nc.is_closed or not nc.is_connected:
                    raise ConnectionError("the connection to NATS closed") from None
                return []
            return self._first_copies(msgs)
        if len(self._core) < limit:
            with self._arrived:
                self._arrived.wait(wait_s)
        out = []
        while self._core and len(out) < limit:
            out.append(self._core.popleft())
        return out

    def _first_copies(self, msgs: list[Any]) -> list[Message]:
        """The fetched messages as Messages, without those this process holds or has committed
        already (see the module's doc); a committed one's copy is acked again."""
        now = time.monotonic()
        horizon = now - self.config.ack_wait_s * KEEP_IN_PROGRESS
        out: list[Message] = []
        again: list[Any] = []
        with self._taken_lock:
            taken = self._taken
            for m in msgs:
                seq = stream_sequence(m.reply)
                when = taken.get(seq)
                if when is None or (when != COMMITTED and when < horizon):
                    taken[seq] = now
                    out.append(Message(m.data, m.subject, m))
                    continue
                self.counters["duplicates"] += 1
                if when == COMMITTED:
                    again.append(m)
            excess = len(taken) - self._taken_max
            if excess > 0:
                for seq in list(itertools.islice(taken, excess)):
                    del taken[seq]
        if again:
            self._send_acks(again)
        return out

    def _ack(self, acks: list[Any]) -> None:
        with self._taken_lock:
            taken = self._taken
            for msg in acks:
                seq = stream_sequence(msg.reply)
                if seq in taken:
                    taken[seq] = COMMITTED
        if self._send_acks(acks):
            self.counters["acked"] += len(acks)

    def _send_acks(self, acks: list[Any]) -> bool:
        loop = self._loop
        if loop is None:
            return False

        async def ack_all() -> None:
            for msg in acks:
                await msg.ack()
            nc = self._nc
            if nc is not None and not nc.is_closed:
                await nc.flush(timeout=5)

        try:
            loop.run(ack_all(), 10)
        except Exception as exc:  # not acked: JetStream re-delivers them (dropped as duplicates)
            self.item_failed("ack", exc)
            return False
        return True

    def _stop_consuming(self) -> None:
        if self._sub is not None and self._nc is not None and not self._nc.is_closed:
            self._run_async(self._sub.unsubscribe(), 5)
            self._sub = None

    def _close(self) -> None:
        nc, self._nc, self._psub, self._sub = self._nc, None, None, None
        keeper, self._keeper = self._keeper, None
        if self._loop is not None:
            if keeper is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed already
                    self._loop.loop.call_soon_threadsafe(keeper.cancel)
            if nc is not None:
                with contextlib.suppress(Exception):
                    self._run_async(nc.close(), 5)

    def stop(self) -> None:
        super().stop()
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop()

    def check(self) -> None:
        try:
            self._connect()
        except Exception as exc:
            raise ConnectorError(f"{self.where}: {self._reason(exc)}") from None
        finally:
            self._close_quietly()
            if self._loop is not None:
                self._loop.stop()
                self._loop = None
