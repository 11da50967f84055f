"""One back-off (engine/runs/retry.py) for the batch runner, the streaming sinks' retries and the
field protocols' reconnect loops."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.context import RunContext
from engine.runner import run_pipeline
from engine.runs.retry import backoff_delay, backoff_delays, retry_delays
from engine.spec.models import RetryPolicy
from engine.spec.validate import validate
from engine.streaming.run import run_streaming
from engine.workspace import Workspace


def take(n, it):
    return list(itertools.islice(it, n))


def test_backoff_grows_by_the_multiplier_up_to_the_cap():
    assert take(6, backoff_delays(0.5, 3.0, 10.0)) == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]
    assert take(3, backoff_delays(1.0, 1.0, 5.0)) == [1.0, 1.0, 1.0]
    assert take(2, backoff_delays(8.0, 2.0, 5.0)) == [5.0, 5.0]  # the cap holds from the first wait


@settings(max_examples=200, deadline=None)
@given(
    initial=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    maximum=st.floats(0, 1000),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_jittered_waits_stay_within_the_band_and_never_go_negative(
    initial, multiplier, maximum, jitter, seed
):
    plain = take(20, backoff_delays(initial, multiplier, maximum))
    jittered = take(20, backoff_delays(initial, multiplier, maximum, jitter, random.Random(seed)))
    for base, wait in zip(plain, jittered, strict=True):
        assert wait >= 0
        assert base * (1 - jitter) - 1e-9 <= wait <= base * (1 + jitter) + 1e-9
        assert base <= maximum


@settings(max_examples=200, deadline=None)
@given(
    step=st.integers(0, 60),
    initial=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    maximum=st.floats(0.001, 1e6),
)
def test_the_nth_wait_is_the_nth_of_the_sequence(step, initial, multiplier, maximum):
    sequence = take(step + 1, backoff_delays(initial, multiplier, maximum))
    assert backoff_delay(step, initial, multiplier, maximum) == sequence[-1]


def test_a_huge_failure_count_does_not_overflow():
    assert backoff_delay(10**6, 0.1, 2.0, 30.0) == 30.0
    assert backoff_delay(10**6, 0.0, 2.0, 30.0) == 0.0


def test_the_retry_policy_speaks_the_same_back_off():
    policy = RetryPolicy(max_retries=5, initial_delay_seconds=2, backoff_multiplier=3, max_delay_seconds=40)
    assert take(5, retry_delays(policy)) == [2.0, 6.0, 18.0, 40.0, 40.0]
    assert [policy.delay(i) for i in range(1, 6)] == take(5, retry_delays(policy))


def _policy(**kw) -> dict:
    return {
        "retry_policy": {"max_retries": 3, "initial_delay_seconds": 0.01, "backoff_multiplier": 3.0, **kw}
    }


def test_the_batch_runner_waits_the_shared_back_off(tmp_path):
    """A destination that cannot be written (its path is a folder) is retried; the waits are the
    shared sequence for the pipeline's policy."""
    (tmp_path / "in.csv").write_text("a\n1\n")
    (tmp_path / "out.csv").mkdir()
    doc = {
        "name": "blocked",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv"}}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
        "error_handling": _policy(max_delay_seconds=0.05),
    }
    waits: list[float] = []
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path, sleep=waits.append)
    assert record["status"] == "failed"
    plan_policy = validate(doc).graph.error_handling.retry_policy
    assert waits == take(3, retry_delays(plan_policy)) == [0.01, 0.03, 0.05]


def test_the_streaming_sink_retries_wait_the_shared_back_off(tmp_path):
    from engine.connectors import registry
    from tests.engine.streaming_sources import TicksConnector

    registry.register(TicksConnector)
    (tmp_path / "live.ndjson").mkdir()  # every append fails
    doc = {
        "name": "live",
        "nodes": [
            {
                "id": "ticks",
                "kind": "source",
                "connector_type": "test_ticks",
                "config": {"rows_per_batch": 10, "batches": None, "interval_s": 0.01},
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["ticks"],
                "connector_type": "file",
                "config": {"path": "live.ndjson", "mode": "append"},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 10, "max_latency_ms": 20},
        "error_handling": _policy(max_delay_seconds=0.05),
    }
    events: list[dict] = []
    with Workspace(tmp_path / "data") as ws:
        record = run_streaming(validate(doc), ws, seconds=10, on_event=events.append, base_dir=tmp_path)
    assert record["status"] == "failed"
    waits = [e["delay_s"] for e in events if e["event"] == "sink_retry" and e["node"] == "out"]
    assert waits == [0.01, 0.03, 0.05]


# ---- the field protocols' reconnect loops -----------------------------------------------------
def test_opc_ua_reconnect_waits_are_the_shared_back_off():
    from protocols.opcua import connector

    ours = take(12, connector.backoff_delays(0.5, 30.0, 0.2, random.Random(3)))
    shared = take(12, backoff_delays(0.5, 2.0, 30.0, 0.2, random.Random(3)))
    assert ours == shared


def test_dnp3_reconnects_with_the_shared_back_off():
    from protocols.dnp3 import connector

    assert connector.backoff_delays is backoff_delays


def test_modbus_polling_backs_off_with_the_shared_back_off():
    from protocols.modbus.config import ModbusSourceConfig
    from protocols.modbus.connector import DevicePoller, ModbusSource

    config = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "m1",
                    "poll_interval_ms": 100,
                    "backoff_max_ms": 1000,
                    "tags": [{"name": "t", "address": 0}],
                }
            ]
        }
    )
    source = ModbusSource(config, RunContext(), "meters")
    poller = DevicePoller(config.devices[0], source)
    waits = []
    for failures in range(7):
        poller.failures = failures
        waits.append(poller.backoff)
    assert waits == take(7, backoff_delays(0.1, 2.0, 1.0))
    assert waits[-1] == 1.0
