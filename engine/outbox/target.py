"""The contract between the outbox's forwarder and an upstream (PostgreSQL, Sparkplug B, NATS
JetStream, webhooks).

An upstream target delivers Arrow tables. Every table it is given carries the destination's own
columns plus `_key` (utf8): the record's idempotency key, stable across retries, restarts and
crashes (engine/outbox/keys.py). The upstream side deduplicates on it (PostgreSQL: a unique index
and `ON CONFLICT DO NOTHING`; JetStream: `Nats-Msg-Id`; webhook: `Idempotency-Key`), so the
forwarder's at-least-once delivery is exactly-once in effect.

- `open()` connects. An upstream that cannot be reached raises `DeliveryError(retryable=True)`.
- `deliver(table, historical=...)` returns only once the upstream has committed or acknowledged
  every row of `table`; otherwise it raises `DeliveryError`. It is all-or-nothing from the
  forwarder's point of view: on an error the forwarder sends the same rows again (same keys).
  `historical` is true for backlog drained after an outage (Sparkplug sets `is_historical`).
- A non-retryable error (the upstream refused the data itself: a constraint, a 4xx, a payload too
  large) says so with `retryable=False`; the forwarder then bisects the table to find the poison
  record(s), quarantines them after N tries, and delivers the rest.
- `retry_after` (seconds) is honoured when the upstream says how long to wait (HTTP Retry-After).
- `close()` disconnects; it never raises.
- `check()` is "test connection": a one-line ConnectorError when the upstream cannot be reached.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa

KEY_COLUMN = "_key"


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@runtime_checkable
class UpstreamTarget(Protocol):
    name: str

    def open(self) -> None: ...

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None: ...

    def close(self) -> None: ...

    def check(self) -> None: ...

    def describe_target(self) -> str: ...
