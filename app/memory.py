"""Memory housekeeping of the long-running processes (`aggregator serve`, a real-time
`aggregator run`): Polars' freed pages kept for reuse, fewer glibc malloc arenas, start-up's objects
frozen, free heap pages given back. Measured in docs/performance.md ("Idle memory and CPU")."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

TRIM_EVERY_S = 30.0  # housekeeping: free heap pages given back to the OS this often (glibc)
MALLOC_ARENAS = 2  # glibc: at most this many malloc arenas (its default: 8 a core)


def settle_memory(trim: Callable[[], Any] | None) -> None:
    """Once started: start-up's garbage collected, what is left frozen (the imported modules: the
    collector never walks them again), the collector back on, free heap pages back to the OS."""
    gc.collect()
    gc.freeze()
    gc.enable()
    if trim is not None:
        trim()


def tune_malloc() -> Callable[[], Any] | None:
    """Called before anything imports Polars: Polars' allocator keeps a stream's freed pages for
    reuse (`engine.allocator_for_streams`). glibc only (else None): at most `MALLOC_ARENAS` malloc
    arenas for the threads started from now on (the API's, the engine's workers, a stream's threads:
    each would otherwise get an arena of its own that holds on to what it once used), unless
    `MALLOC_ARENA_MAX` says otherwise; returns `malloc_trim(0)`, which the service calls every
    `TRIM_EVERY_S` (free pages back to the OS)."""
    import ctypes
    import ctypes.util
    import os
    import sys

    import engine

    engine.allocator_for_streams()
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has neither)
        return None
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX
    return lambda: trim(0)
