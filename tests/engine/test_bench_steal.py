"""The Modbus benchmark's reading of the host's steal time (tests/benchmarks/bench_opcua_pipeline.py
`machine_ticks` / `steal_percent`, reported by bench_modbus.py as `host_steal_percent`): the share
of the machine's CPU time the hypervisor gave to other guests, one reason a CPU-per-value figure
rises while our code does not change (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_opcua_pipeline.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_opcua_pipeline_for_tests", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steal_is_the_share_of_all_states(bench):
    # user nice system idle iowait irq softirq steal guest guest_nice
    before = [100, 0, 10, 300, 0, 0, 0, 40, 7, 0]
    after = [160, 0, 20, 400, 0, 0, 0, 70, 57, 0]  # 200 ticks in all: 30 stolen; guest is in user
    assert bench.steal_percent(before, after) == 15.0


def test_no_steal_no_readings_no_time(bench):
    same = [5, 0, 5, 90, 0, 0, 0, 0]
    assert bench.steal_percent(same, [15, 0, 5, 180, 0, 0, 0, 0]) == 0.0
    assert bench.steal_percent(None, same) is None
    assert bench.steal_percent(same, same) is None  # no time between the readings
    assert bench.steal_percent([1, 2, 3], [4, 5, 6]) is None  # a kernel without a steal column


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_reads_this_machine(bench):
    first = bench.machine_ticks()
    assert first is not None and len(first) >= 8
    # wait on the very thing compared: some CPU time has passed between the two readings
    second = bench.machine_ticks()
    while sum(second[:8]) == sum(first[:8]):
        sum(range(100_000))
        second = bench.machine_ticks()
    share = bench.steal_percent(first, second)
    assert share is not None and 0.0 <= share <= 100.0
