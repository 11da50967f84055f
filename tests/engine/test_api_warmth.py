"""The engine keeps its work off the GUI thread's back: native compute pools run below the GUI's
priority whoever started them, and what a first run imports is imported before the user asks.

Both are checked in a fresh interpreter: in this one, pools and modules already exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str, tmp_path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "AGGREGATOR_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread priorities are a Linux feature")
def test_pool_threads_the_gui_thread_started_are_lowered(tmp_path):
    """Polars starts its streaming executors and I/O runtime on first use, at the priority of the
    thread that used it: here the main (GUI) thread, at nice 0. The engine's sweep lowers them."""
    seen = run_fresh(
        f"""
        import json, os, threading, time
        import polars as pl
        def threads():
            return {{tid: open(f"/proc/self/task/{{tid}}/comm").read().strip() for tid in os.listdir("/proc/self/task")}}
        existing = threads()
        # The streaming engine's first query starts its pools from this thread.
        pl.LazyFrame({{"a": list(range(1000))}}).select(pl.col("a").sum()).collect(engine="streaming")
        started = {{t: n for t, n in threads().items() if t not in existing}}
        from engine.api.core import ENGINE_NICE, POOL_SWEEP_S
        def pools():
            out = {{}}
            for tid, name in started.items():
                try:
                    out[f"{{name}}/{{tid}}"] = os.getpriority(os.PRIO_PROCESS, int(tid))
                except OSError:  # ended
                    pass
            return out
        before = pools()
        from engine.api import LocalEngine
        engine = LocalEngine({str(tmp_path / "data")!r})
        deadline = time.monotonic() + 3 * POOL_SWEEP_S + 2
        while time.monotonic() < deadline and min(pools().values()) < ENGINE_NICE:
            time.sleep(0.05)
        after = pools()
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        engine.close()
        print(json.dumps({{"before": before, "after": after, "mine": mine, "nice": ENGINE_NICE}}))
        """,
        tmp_path,
    )
    assert seen["before"], "the streaming query started no pool threads"
    assert min(seen["before"].values()) == seen["mine"] < seen["nice"], seen  # started at ours
    assert seen["after"] and min(seen["after"].values()) >= seen["nice"], seen
    assert seen["mine"] < seen["nice"]  # the GUI thread itself keeps its priority


def test_warm_up_imports_what_a_first_run_needs(tmp_path):
    seen = run_fresh(
        f"""
        import json, sys
        from engine.api import LocalEngine
        from engine.api.core import WARM_MODULES
        engine = LocalEngine({str(tmp_path / "data")!r})
        before = [m for m in WARM_MODULES if m in sys.modules]
        took = engine.warm_up().result(60)
        after = [m for m in WARM_MODULES if m in sys.modules]
        engine.close()
        print(json.dumps({{"before": before, "after": after, "all": list(WARM_MODULES), "took": took}}))
        """,
        tmp_path,
    )
    assert "engine.runner" not in seen["before"]  # creating the engine does not import the runner
    assert seen["after"] == seen["all"]
    assert 0 < seen["took"] < 60
