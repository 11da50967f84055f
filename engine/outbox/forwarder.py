"""The forwarder of one destination: a thread that delivers its outbox to the upstream target.

- **Ordered.** Batches go out in the order the outbox accepted them, within each of two lanes:
  - *live*: batches accepted after the forwarder caught up (after it started, or after the link
    came back), sent first, never throttled, `historical=False`;
  - *backlog*: what was waiting when the link came back (or, when the forwarder starts, what had
    waited more than `STARTUP_BACKLOG_S`), oldest first,
    `historical=True`, throttled to `backfill_rows_per_s`; it drains behind the live lane.
  A record's key (tag + timestamp ...) is in exactly one batch, so order per key holds; per tag,
  live values may reach the upstream before older backlog values, flagged historical.
- **At least once.** A batch is deleted from the outbox (the cursor moves) only after the target
  said it committed. A crash in between sends it again with the same keys: the upstream
  deduplicates.
- **Backoff.** A retryable error (upstream down) closes the target and waits by the one shared
  backoff (engine/runs/retry.py), or `retry_after` when the upstream said how long.
- **Poison.** A non-retryable error bisects the chunk to the refusing record(s); each is tried
  `max_tries` times, then quarantined with the reason; the rest is delivered.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from engine.outbox.store import Batch, OutboxStore, token_alive
from engine.outbox.target import DeliveryError
from engine.runs.retry import backoff_delays

CHUNK_ROWS = 50_000  # records per delivery (whole batches; a larger batch goes alone)
IDLE_WAIT_S = 0.5  # appends by this process wake the forwarder at once; other processes' are polled
MAX_RETRY_AFTER_S = 300.0
STARTUP_BACKLOG_S = 5.0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Forwarder(threading.Thread):
    def __init__(
        self,
        store: OutboxStore,
        make_target: Callable[[], Any],
        config: Any,
        say: Callable[[str, str], None] | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
        backoff: tuple[float, float, float] = (0.2, 2.0, 30.0),
    ):
        super().__init__(daemon=True, name=f"outbox-{store.path.stem}")
        self.store = store
        self._make, self.config = make_target, config
        self._say = say or (lambda level, msg: None)
        self.chunk_rows = chunk_rows
        self._backoff = backoff
        self._stop_event = threading.Event()
        self.target: Any = None
        self.live_mark: int | None = None
        self.link: str | None = None
        self._outage = False
        self._delays = None
        self._reset_target = False  # update() with a changed config: reconnect with it
        # In-memory figures of this forwarder (the durable ones are the store's counters).
        self.delivered_live = 0
        self.delivered_historical = 0
        self.deliveries = 0
        self.last_error: str | None = None
        # Test hook: called with the batch seqs after the target committed them and before the
        # outbox deletes them (a crash here must not lose or duplicate anything).
        self.before_cursor: Callable[[list[int]], None] | None = None

    # ---- control -----------------------------------------------------------------------------
    def update(self, make_target: Callable[[], Any], config: Any) -> None:
        """A new run of the pipeline: its (possibly changed) destination. The next delivery
        reconnects with it."""
        changed = config != self.config
        self._make, self.config = make_target, config
        if changed:
            self._reset_target = True

    def stop(self) -> None:
        self._stop_event.set()
        with self.store.changed:
            self.store.changed.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def _set_link(self, state: str, detail: str | None = None) -> None:
        if state != self.link:
            self.link = state
            with contextlib.suppress(Exception):
                self.store.set_link(state, detail)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        with contextlib.suppress(Exception):
            self.store.discard_staged_except(token_alive)  # batches of runs that were killed
        # At start, what waited longer than STARTUP_BACKLOG_S is backlog (the service was down);
        # what a pipeline committed just now is live, and goes out in order.
        self.live_mark = self.store.max_seq(created_before=time.time() - STARTUP_BACKLOG_S)
        next_backlog = 0.0
        while not self.stopping:
            try:
                if self._reset_target:
                    self._close_target()
                    self._reset_target = False
                if self.target is None:
                    self._connect()
                live = self.store.read(above=self.live_mark, max_rows=self.chunk_rows, hold=True)
                if live:
                    self._send(live, historical=False)
                    continue
                rate = getattr(self.config, "backfill_rows_per_s", None)
                wait = next_backlog - time.monotonic()
                if wait > 0:
                    self._wait(min(wait, IDLE_WAIT_S))
                    continue
                limit = self.chunk_rows if rate is None else max(1, min(self.chunk_rows, int(rate)))
                backlog = self.store.read(up_to=self.live_mark, max_rows=limit, hold=True)
                if backlog:
                    rows = self._send(backlog, historical=True)
                    if rate:
                        next_backlog = time.monotonic() + rows / rate
                    continue
                self._idle()
            except DeliveryError as exc:
                self._failed(exc, exc.retry_after)
            except Exception as exc:  # a bug or a broken target: never kill the thread
                self._failed(exc, None)
        self._close_target()
        self._set_link("stopped")

    def _connect(self) -> None:
        self._set_link("connecting")
        target = self._make()
        target.open()
        self.target = target
        self._set_link("up")
        if self._outage:  # what piled up while the link was down drains behind new data
            self.live_mark = self.store.max_seq()
            self._outage = False

    def _close_target(self) -> None:
        if self.target is not None:
            with contextlib.suppress(Exception):
                self.target.close()
            self.target = None

    def _failed(self, exc: BaseException, retry_after: float | None) -> None:
        detail = _one_line(exc)
        if detail != self.last_error:
            self._say("warning", f"outbox {self.store.path.stem}: upstream not reached: {detail}")
        self.last_error = detail
        self._set_link("down", detail)
        self._close_target()
        self._outage = True
        if self._delays is None:
            self._delays = backoff_delays(*self._backoff, jitter=0.1)
        delay = next(self._delays)
        if retry_after is not None:
            delay = min(max(0.0, retry_after), MAX_RETRY_AFTER_S)
        self._stop_event.wait(delay)

    def _wait(self, seconds: float) -> None:
        seen = self.store.max_seq()
        with self.store.changed:
            if self.stopping or self.store.max_seq() != seen:
                return
            self.store.changed.wait(seconds)

    def _idle(self) -> None:
        seen = self.live_mark
        with self.store.changed:
            if self.stopping or self.store.max_seq() > (seen or 0):
                return
            self.store.changed.wait(IDLE_WAIT_S)

    # ---- one delivery ------------------------------------------------------------------------
    def _send(self, batches: list[Batch], *, historical: bool) -> int:
        """Deliver batches read with `hold` (in flight: a full outbox does not drop them meanwhile)."""
        try:
            return self._deliver_batches(batches, historical=historical)
        finally:
            self.store.release([b.seq for b in batches])  # delivered ones are gone already

    def _deliver_batches(self, batches: list[Batch], *, historical: bool) -> int:
        quarantine: list[tuple[pa.Table | None, str, int, int]] = []
        good = [b for b in batches if b.table is not None]
        for b in batches:
            if b.table is None:
                quarantine.append((None, b.error or "damaged batch", 0, b.rows))
        delivered = 0
        for table in _tables(good):
            refused = self._deliver(table, historical)
            quarantine.extend(refused)
            delivered += table.num_rows - sum(r[3] for r in refused)
        seqs = [b.seq for b in batches]
        if self.before_cursor is not None:
            self.before_cursor(seqs)
        self.store.delivered(seqs, delivered, quarantine)
        if quarantine:
            self._say(
                "warning",
                f"outbox {self.store.path.stem}: {sum(q[3] for q in quarantine)} records quarantined: {quarantine[0][1]}",
            )
        self.deliveries += 1
        if historical:
            self.delivered_historical += delivered
        else:
            self.delivered_live += delivered
        self._delays = None
        self.last_error = None
        self._set_link("up")
        return sum(b.rows for b in batches)

    def _deliver(self, table: pa.Table, historical: bool) -> list[tuple[pa.Table | None, str, int, int]]:
        """Deliver `table`; records the upstream refuses (non-retryable) are found by bisection
        and returned for quarantine after `max_tries` tries each. A retryable error propagates."""
        try:
            self.target.deliver(table, historical=historical)
            return []
        except DeliveryError as exc:
            if exc.retryable:
                raise
            first = exc
        return self._bisect(table, historical, first)

    def _bisect(
        self, table: pa.Table, historical: bool, error: DeliveryError
    ) -> list[tuple[pa.Table | None, str, int, int]]:
        if table.num_rows <= 1:
            tries = 1
            max_tries = int(getattr(self.config, "max_tries", 5) or 1)
            while tries < max_tries and not self.stopping:
                try:
                    self.target.deliver(table, historical=historical)
                    return []
                except DeliveryError as exc:
                    if exc.retryable:
                        raise
                    error = exc
                    tries += 1
            return [(table, _one_line(error), tries, table.num_rows)]
        half = table.num_rows // 2
        out = []
        for part in (table.slice(0, half), table.slice(half)):
            try:
                self.target.deliver(part, historical=historical)
            except DeliveryError as exc:
                if exc.retryable:
                    raise
                out.extend(self._bisect(part, historical, exc))
        return out


def _tables(batches: list[Batch]) -> list[pa.Table]:
    """The batches as few tables as possible: consecutive batches of one schema are concatenated."""
    out: list[pa.Table] = []
    group: list[pa.Table] = []
    for b in batches:
        assert b.table is not None
        if group and b.table.schema != group[0].schema:
            out.append(pa.concat_tables(group))
            group = []
        group.append(b.table)
    if group:
        out.append(pa.concat_tables(group))
    return out
