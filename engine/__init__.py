"""The engine: pipeline spec, transformations, executor, connectors and stores. No Qt."""

import os
import sys

# Polars' allocator (jemalloc) keeps freed pages for 10 s by default, so a batch run's garbage
# batches pile up as resident memory. Returning them after 300 ms, from jemalloc's own background
# thread, cut the CSV -> DuckDB benchmark's peak RSS by about 120 MB at the same speed. jemalloc reads
# this once, when Polars is first imported: it takes effect wherever the engine is imported first.
ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"
BATCH_ALLOCATOR = "background_thread:true,dirty_decay_ms:300,muzzy_decay_ms:0"
# A stream frees and allocates the same few megabytes every poll: returned after 300 ms, its pages
# were faulted in fresh every second. Modbus at 100,000 values/s: ~21,000 page faults a second and
# a quarter of the process's CPU in the kernel; kept for STREAM_DECAY_MS, 11,000 - 12,000 a second
# and 2 - 3 points of a core less, at the same peak RSS (tests/benchmarks/bench_modbus.py; figures
# in docs/performance.md). A 2 s decay saved next to nothing: the pages still went between polls.
# In a service, a batch run's peak is handed back that much later.
STREAM_DECAY_MS = 60_000
STREAM_ALLOCATOR = f"background_thread:true,dirty_decay_ms:{STREAM_DECAY_MS},muzzy_decay_ms:0"
# The engine marks the value it chose (`ALLOCATOR_CHOSEN_ENV`): a child process inherits it (and
# Polars, once loaded, prefixes its own defaults), and chooses again for its own kind. So does the
# child of a process that loaded Polars first, which inherits Polars' own default (`POLARS_OWN`,
# what Polars 2 writes there when it loads). Any other value came from whoever started the process,
# and wins.
ALLOCATOR_CHOSEN_ENV = "AGGREGATOR_ALLOCATOR_CHOSEN"
POLARS_OWN = "dirty_decay_ms:500,muzzy_decay_ms:1000"
_ALLOCATOR_FROM_ENVIRONMENT = os.environ.get(ALLOCATOR_ENV, POLARS_OWN) != POLARS_OWN and (
    ALLOCATOR_CHOSEN_ENV not in os.environ
)


def _choose_allocator(value: str) -> None:
    os.environ[ALLOCATOR_ENV] = value
    os.environ[ALLOCATOR_CHOSEN_ENV] = "1"


if not _ALLOCATOR_FROM_ENVIRONMENT:
    _choose_allocator(BATCH_ALLOCATOR)


def allocator_for_streams() -> bool:
    """For a process that streams (`aggregator serve`, a real-time `aggregator run`: app/memory.py),
    called before anything imports Polars: its allocator keeps freed pages `STREAM_DECAY_MS`. False,
    and nothing changed, where Polars is loaded already or the environment set a value of its own."""
    if _ALLOCATOR_FROM_ENVIRONMENT or "polars" in sys.modules:
        return False
    _choose_allocator(STREAM_ALLOCATOR)
    return True
