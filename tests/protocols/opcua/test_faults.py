"""The link breaks: gap records while it is down, a jittered back-off, and a healed subscription."""

from __future__ import annotations

import itertools
import random
import time

import polars as pl
import pytest

from protocols.opcua.connector import backoff_delays


def test_backoff_doubles_to_the_cap_with_jitter():
    plain = list(itertools.islice(backoff_delays(0.5, 4.0, 0.0), 6))
    assert plain == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = list(itertools.islice(backoff_delays(0.5, 4.0, 0.2, random.Random(7)), 6))
    assert all(0.8 * p <= j <= 1.2 * p for p, j in zip(plain, jittered, strict=True))
    assert jittered != plain


@pytest.mark.slow
def test_server_restart_heals_with_gap_records(farm, recorder):
    config = {
        "endpoint": farm.endpoint,
        "browse_root": "WindFarm",
        "publishing_interval_ms": 100,
        "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0, "jitter": 0.1},
    }
    sim = farm
    with recorder(config) as rec:
        rec.wait_for(lambda: rec.source.state == "subscribed" and rec.source.counters["notifications"] >= 24)
        sim.go_down()
        down_at = time.monotonic()
        rec.wait_for(lambda: rec.source.state in ("lost", "reconnecting"))
        time.sleep(1.5)  # the server stays away for a while: gaps repeat meanwhile
        sim.come_back()
        up_at = time.monotonic()
        healed = rec.wait_for(
            lambda: rec.source.counters["reconnects"] == 1 and rec.source.state == "subscribed"
        )
        assert healed < 5.0, f"healed {healed:.1f} s after the server came back"
        marker = rec.source.counters["notifications"]
        rec.wait_for(lambda: rec.source.counters["notifications"] >= marker + 24)  # values flow again
    names = rec.state_names()
    lost_at = names.index("lost")
    assert names[:3] == ["connecting", "connected", "subscribed"]
    assert "reconnecting" in names[lost_at:] and names[-2] == "subscribed"

    frame = rec.frame()
    gaps = frame.filter(pl.col("reason") == "comm_lost")
    assert set(gaps["quality"]) == {"bad"} and gaps["value"].null_count() == gaps.height
    tags = set(frame.filter(pl.col("quality") == "good")["tag"])
    assert len(tags) == 12 and set(gaps["tag"]) == tags
    # One gap per tag at the loss, then again at least once while the server stayed away.
    per_tag = gaps.group_by("tag").len()["len"]
    assert per_tag.min() >= 2 and rec.source.counters["gaps"] == gaps.height
    # The gaps cover the down time: none before the loss, none after the link healed.
    assert gaps["received_at"].min() >= frame["received_at"].min()
    last_good_before = frame.filter(pl.col("quality") == "good")["received_at"].min()
    assert gaps["received_at"].min() > last_good_before
    resumed = frame.filter(
        (pl.col("quality") == "good") & (pl.col("received_at") > gaps["received_at"].max())
    )
    assert set(resumed["tag"]) == tags
    assert up_at > down_at


def test_server_restart_reresolves_browse_paths(farm, recorder):
    config = {
        "endpoint": farm.endpoint,
        "nodes": ["WindFarm/Turbine01/Power"],
        "publishing_interval_ms": 100,
        "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0},
    }
    with recorder(config) as rec:
        rec.wait_for(lambda: rec.source.counters["notifications"] >= 3)
        farm.restart()
        rec.wait_for(lambda: rec.source.counters["reconnects"] == 1)
        marker = rec.source.counters["notifications"]
        rec.wait_for(lambda: rec.source.counters["notifications"] >= marker + 3)
    assert set(rec.frame()["tag"]) == {"Turbine01.Power"}


def test_stalled_values_send_no_notifications(farm, recorder):
    config = {"endpoint": farm.endpoint, "browse_root": "WindFarm", "publishing_interval_ms": 100}
    with recorder(config) as rec:
        rec.wait_for(lambda: rec.source.counters["notifications"] >= 12)
        farm.stall()
        try:
            time.sleep(0.5)  # let the last changes drain
            stalled = rec.source.counters["notifications"]
            time.sleep(0.6)
            assert rec.source.counters["notifications"] == stalled
            assert rec.source.state == "subscribed"  # a stalled server is not a lost link
        finally:
            farm.stall(False)
        rec.wait_for(lambda: rec.source.counters["notifications"] > stalled)
