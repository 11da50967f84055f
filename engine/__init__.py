"""The engine: pipeline spec, transformations, executor, connectors and stores. No Qt."""

import os

# Polars' allocator (jemalloc) keeps freed pages for 10 s by default, so a streaming run's garbage
# batches pile up as resident memory. Returning them after 300 ms, from jemalloc's own background
# thread, cut the CSV -> DuckDB benchmark's peak RSS by about 120 MB at the same speed. jemalloc reads
# this once, when Polars is first imported: it takes effect wherever the engine is imported first,
# and a value already in the environment wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:300,muzzy_decay_ms:0")
