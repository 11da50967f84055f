"""What every simulator's `run_cli` shares: serve until Ctrl-C or for a while, then stop."""

from __future__ import annotations

import time
from collections.abc import Callable


def serve(stop: Callable[[], None], seconds: float | None) -> None:
    """Block until Ctrl-C (or until `seconds` have passed), then call `stop` whatever happened."""
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        stop()
