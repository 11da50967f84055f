"""The one back-off: exponential, capped, optionally jittered.

Used by the batch runner's retries, the streaming sinks' commit retries (both with the pipeline's
`retry_policy`) and the field protocols' reconnect loops (OPC UA, DNP3, Modbus), so a wait is
computed the same way everywhere."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any


def backoff_delay(step: int, initial: float, multiplier: float = 2.0, maximum: float = float("inf")) -> float:
    """The wait after `step` failures in a row (0: `initial`): `initial * multiplier**step`, capped
    at `maximum`, for loops that count their failures (Modbus polling). Element `step` of
    `backoff_delays(initial, multiplier, maximum)`; never overflows."""
    delay = min(initial, maximum)
    for _ in range(max(0, step)):
        if delay >= maximum or delay == 0 or multiplier == 1:
            break
        delay = min(maximum, delay * multiplier)
    return delay


def backoff_delays(
    initial: float,
    multiplier: float = 2.0,
    maximum: float = float("inf"),
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """initial, initial*multiplier, initial*multiplier**2 ... capped at `maximum`; each delay is
    spread by +-`jitter` (a fraction: 0.1 is +-10%) so that many clients do not retry in step.
    Never negative; endless (take what you need)."""
    if initial < 0 or multiplier < 1 or maximum < 0 or not 0 <= jitter <= 1:
        raise ValueError("backoff: initial >= 0, multiplier >= 1, maximum >= 0 and 0 <= jitter <= 1")
    rng = rng or random.Random()
    delay = min(initial, maximum)
    while True:
        yield max(0.0, delay * (1.0 + rng.uniform(-jitter, jitter))) if jitter else delay
        delay = min(maximum, delay * multiplier)


def retry_delays(policy: Any) -> Iterator[float]:
    """The waits of a pipeline's `retry_policy` (engine/spec/models.py RetryPolicy): the first
    retry waits `initial_delay_seconds`, each next one `backoff_multiplier` times longer, up to
    `max_delay_seconds`. Unbounded: stop after `policy.max_retries`."""
    return backoff_delays(
        policy.initial_delay_seconds, policy.backoff_multiplier, policy.max_delay_seconds, 0.0
    )


def retryable(exc: BaseException) -> bool:
    """Worth another attempt: the outside world may heal (a file appears, a server comes back)."""
    from engine.errors import ConnectorError

    return isinstance(exc, ConnectorError | OSError)
