"""The event loop a protocol source polls on: uvloop's under load, asyncio's own otherwise.

Why uvloop (issue 12): at 100,000 Modbus values a second the source's thread sends 800 requests a
second and wakes for each answer; most of its CPU was asyncio's own machinery (the selector, the
per-request timer heap, futures, transport writes), not our decoding. uvloop (libuv, Cython; the
MagicStack project, kept since 2016, wheels for Linux and macOS) runs the same protocols and
transports with ~15% less CPU for the whole source (`bench_modbus.py`, the source alone: median
9.7% against 11.5% of a core, 4 pairs; docs/performance.md). It costs ~2 MB of RSS when imported, so
a source that polls a few requests a second (the idle one-tag pipeline, < 100 MB) keeps asyncio's
loop. Windows has no uvloop (not a dependency there): asyncio's loop.

`AGGREGATOR_EVENT_LOOP=asyncio` forces asyncio's loop (to rule the loop out when chasing a fault).
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger(__name__)

# Requests (or reads) a second from which a source's loop is uvloop's: below it the loop's own cost
# is a few ms a second and the 2 MB weigh more.
FAST_LOOP_FROM = 50.0
ENV = "AGGREGATOR_EVENT_LOOP"


def new_event_loop(requests_per_s: float) -> asyncio.AbstractEventLoop:
    """A new loop for a source thread that makes about `requests_per_s` requests a second."""
    if requests_per_s >= FAST_LOOP_FROM and os.environ.get(ENV, "").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:  # Windows, or a build without it: asyncio's loop does the same work
            log.debug("uvloop is not installed: asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def is_fast(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether `loop` is uvloop's (the tests ask which loop a source got)."""
    return type(loop).__module__.startswith("uvloop")
