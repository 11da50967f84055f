"""Polars' allocator in the long-running processes (issue 12, the Modbus stream's CPU): a process
that streams (`aggregator serve`, a real-time `aggregator run`) keeps freed pages for reuse
(`engine.STREAM_ALLOCATOR`), every other process hands them back after 300 ms
(`engine.BATCH_ALLOCATOR`), and a value the user set wins. jemalloc reads the setting once, when
Polars loads, so each check runs in a process of its own and records the value at the moment
Polars is imported (an import hook), not after. What the setting saves is measured by
tests/benchmarks/bench_modbus.py (docs/performance.md)."""

from __future__ import annotations

import json
import os

import pytest

import engine
from protocols.modbus.simulator import ModbusSimulator
from tests.children import last_line
from tests.pipelines import csv_into_duckdb, one_modbus_tag

# Prints, as its last line, the allocator setting in force when Polars was first imported (null if
# it never was), what the code under test returned, and the setting at the end. `CALL` is the code
# run.
WATCH = """
import json, os, sys

seen = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "polars" and "at_polars_import" not in seen:
            seen["at_polars_import"] = os.environ.get("_RJEM_MALLOC_CONF")
        return None


sys.meta_path.insert(0, Watch())
CALL
print(json.dumps({"at_polars_import": seen.get("at_polars_import"), "returned": returned,
                  "at_end": os.environ.get("_RJEM_MALLOC_CONF")}))
"""


def watched(call: str, *args: str, env: dict[str, str] | None = None) -> dict:
    return json.loads(last_line(WATCH.replace("CALL", call), *args, env=env))


def test_the_two_settings_differ_only_in_how_long_freed_pages_are_kept():
    assert engine.BATCH_ALLOCATOR != engine.STREAM_ALLOCATOR
    batch = dict(item.split(":") for item in engine.BATCH_ALLOCATOR.split(","))
    stream = dict(item.split(":") for item in engine.STREAM_ALLOCATOR.split(","))
    assert {k: v for k, v in batch.items() if k != "dirty_decay_ms"} == {
        k: v for k, v in stream.items() if k != "dirty_decay_ms"
    }
    assert int(stream["dirty_decay_ms"]) == engine.STREAM_DECAY_MS > int(batch["dirty_decay_ms"])


def test_a_process_that_imports_the_engine_loads_polars_with_the_batch_setting():
    seen = watched("import engine, polars\nreturned = None")
    assert seen["at_polars_import"] == engine.BATCH_ALLOCATOR


def test_a_streaming_process_loads_polars_with_the_stream_setting():
    seen = watched("from app.memory import tune_malloc\nreturned = None\ntune_malloc()\nimport polars")
    assert seen["at_polars_import"] == engine.STREAM_ALLOCATOR


def test_once_polars_is_loaded_the_setting_is_left_as_it_was():
    call = "import engine, os, polars\nbefore = os.environ['_RJEM_MALLOC_CONF']\nreturned = [engine.allocator_for_streams(), before]"
    seen = watched(call)
    assert seen["at_polars_import"] == engine.BATCH_ALLOCATOR
    assert seen["returned"] == [False, seen["at_end"]]  # unchanged by the call


@pytest.mark.parametrize("inherited", ["batch", "stream", "after polars"])
def test_a_value_inherited_from_an_engine_process_is_chosen_again(inherited):
    """A child of a streaming process (or of this test's process) inherits the value the engine
    chose, with its mark (Polars, once loaded, prefixes its own defaults): not the user's, so the
    child's own kind decides."""
    value = {
        "batch": engine.BATCH_ALLOCATOR,
        "stream": engine.STREAM_ALLOCATOR,
        "after polars": f"{engine.POLARS_OWN},{engine.STREAM_ALLOCATOR}",
    }[inherited]
    env = {**os.environ, "_RJEM_MALLOC_CONF": value, engine.ALLOCATOR_CHOSEN_ENV: "1"}
    seen = watched("import engine, polars\nreturned = None", env=env)
    assert seen["at_polars_import"] == engine.BATCH_ALLOCATOR
    seen = watched("import engine\nreturned = engine.allocator_for_streams()\nimport polars", env=env)
    assert (seen["at_polars_import"], seen["returned"]) == (engine.STREAM_ALLOCATOR, True)


def test_polars_own_default_inherited_from_a_process_that_loaded_it_first_is_chosen_again():
    env = {k: v for k, v in os.environ.items() if k != engine.ALLOCATOR_CHOSEN_ENV}
    env["_RJEM_MALLOC_CONF"] = engine.POLARS_OWN
    seen = watched("import engine, polars\nreturned = None", env=env)
    assert seen["at_polars_import"] == engine.BATCH_ALLOCATOR


def test_polars_writes_its_own_default_as_the_engine_expects():
    """`engine.POLARS_OWN` is what this Polars writes into the variable when it loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", engine.ALLOCATOR_CHOSEN_ENV)}
    seen = watched("import polars\nreturned = os.environ['_RJEM_MALLOC_CONF']", env=env)
    assert (seen["at_polars_import"], seen["returned"]) == (None, engine.POLARS_OWN)


def test_a_value_the_user_set_wins_in_every_process():
    own = "background_thread:false,dirty_decay_ms:5000"
    env = {k: v for k, v in os.environ.items() if k != engine.ALLOCATOR_CHOSEN_ENV}
    env["_RJEM_MALLOC_CONF"] = own
    seen = watched("import engine\nreturned = engine.allocator_for_streams()\nimport polars", env=env)
    assert (seen["at_polars_import"], seen["returned"]) == (own, False)


RUN = "from app.cli import main\nreturned = main(sys.argv[1:])"


def test_aggregator_run_of_a_stream_loads_polars_with_the_stream_setting(tmp_path):
    with ModbusSimulator(meters=1) as sim:
        spec = tmp_path / "one_tag.json"
        spec.write_text(json.dumps(one_modbus_tag(sim.port)))
        data = tmp_path / "stream"
        seen = watched(RUN, "run", str(spec), "--seconds", "2", "--data-dir", str(data))
    assert seen["returned"] == 0
    # a one-tag stream may never load Polars (the idle pipeline's lean path): then what it would read
    assert seen["at_polars_import"] in (None, engine.STREAM_ALLOCATOR)
    assert seen["at_end"].endswith(engine.STREAM_ALLOCATOR)


def test_aggregator_run_of_a_batch_loads_polars_with_the_batch_setting(tmp_path):
    spec = tmp_path / "load.json"
    spec.write_text(json.dumps(csv_into_duckdb(tmp_path, 10, name="load", table="t")))
    seen = watched(RUN, "run", str(spec), "--data-dir", str(tmp_path / "batch"))
    assert (seen["at_polars_import"], seen["returned"]) == (engine.BATCH_ALLOCATOR, 0)
