"""The schedule policy (engine/service/scheduler.py, docs/service.md) with a fake clock: the decision
`Scheduler.tick(now)` is the one the service's thread makes, fed the clock we choose."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from engine.service.scheduler import Scheduler
from engine.spec.models import CronSchedule, IntervalSchedule


class FakeClock:
    def __init__(self, start: datetime):
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def set(self, t: datetime) -> datetime:
        self.t = t
        return t


def _scheduler(clock, logs=None):
    fires = []
    logs = [] if logs is None else logs
    s = Scheduler(fires.append, now=clock, on_log=lambda level, text: logs.append((level, text)))
    return s, fires


START = datetime(2026, 3, 10, 9, 59, 30, tzinfo=UTC)


def test_cron_fires_once_per_slot_in_its_time_zone():
    clock = FakeClock(START)
    s, _fires = _scheduler(clock)
    # 11:00 in Berlin is 10:00 UTC in March (CET, UTC+1)
    assert s.add("hourly", CronSchedule(type="cron", expression="0 11 * * *", timezone="Europe/Berlin")) == (
        datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    )
    assert s.tick(clock.set(START + timedelta(seconds=29))) == []
    fired = s.tick(clock.set(datetime(2026, 3, 10, 10, 0, 0, 5000, tzinfo=UTC)))
    assert [(f.key, f.slot, f.missed) for f in fired] == [
        ("hourly", datetime(2026, 3, 10, 10, tzinfo=UTC), 0)
    ]
    assert fired[0].lag_s == pytest.approx(0.005)
    assert s.tick(clock.set(datetime(2026, 3, 10, 10, 0, 1, tzinfo=UTC))) == []  # not twice
    assert s.next_fire("hourly") == datetime(2026, 3, 11, 10, tzinfo=UTC)


def test_cron_clock_back_one_hour_then_forward_one_day():
    """No double fire when the clock goes back over a fired slot; the day skipped by the jump forward
    is one run, said as missed with the count, never a silent skip."""
    clock = FakeClock(START)
    logs: list = []
    s, fires = _scheduler(clock, logs)
    s.add("hourly", CronSchedule(type="cron", expression="0 * * * *"))
    s.tick(clock.set(datetime(2026, 3, 10, 10, 0, 0, tzinfo=UTC)))
    assert [f.slot.hour for f in fires] == [10]
    # back one hour: 09:00:30 .. 10:59:59 of the clock again; 10:00 already fired
    t = clock.set(datetime(2026, 3, 10, 9, 0, 30, tzinfo=UTC))
    while t < datetime(2026, 3, 10, 11, 0, 0, tzinfo=UTC):
        s.tick(t)
        t = clock.set(t + timedelta(minutes=1))
    assert [f.slot.hour for f in fires] == [10], "the 10:00 slot fired again after the clock went back"
    assert any("clock went back" in text for _lvl, text in logs)
    s.tick(clock.set(datetime(2026, 3, 10, 11, 0, 0, tzinfo=UTC)))
    assert [f.slot.hour for f in fires] == [10, 11]
    # forward one day: the 24 slots 12:00 .. 11:00 next day become one fire, 23 said missed
    s.tick(clock.set(datetime(2026, 3, 11, 11, 20, 0, tzinfo=UTC)))
    assert len(fires) == 3
    late = fires[-1]
    assert late.slot == datetime(2026, 3, 11, 11, tzinfo=UTC)
    assert late.missed == 23 and late.first_missed == datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert [t for lvl, t in logs if "missed 23 fires" in t and lvl == "warning"]
    s.tick(clock.set(datetime(2026, 3, 11, 11, 40, 0, tzinfo=UTC)))
    assert len(fires) == 3
    s.tick(clock.set(datetime(2026, 3, 11, 12, 0, 0, tzinfo=UTC)))
    assert [f.missed for f in fires[3:]] == [0]


def test_interval_clock_back_reanchors_and_forward_coalesces():
    clock = FakeClock(START)
    logs: list = []
    s, fires = _scheduler(clock, logs)
    s.add("every10", IntervalSchedule(type="interval", seconds=10))
    for step in range(1, 4):  # 30 s of clock: three fires, ten seconds apart
        s.tick(clock.set(START + timedelta(seconds=10 * step)))
    assert [f.slot for f in fires] == [START + timedelta(seconds=10 * k) for k in (1, 2, 3)]
    # back one hour: the next fire is one interval after the new now, not an hour of silence, not
    # at once (elapsed time since the last fire is what an interval measures)
    back = clock.set(START + timedelta(seconds=30) - timedelta(hours=1))
    assert s.tick(back) == []
    assert s.next_fire("every10") == back + timedelta(seconds=10)
    assert s.tick(clock.set(back + timedelta(seconds=9))) == []
    assert len(s.tick(clock.set(back + timedelta(seconds=10)))) == 1
    # forward one day: one coalesced fire, with the missed count
    fwd = clock.set(back + timedelta(days=1, seconds=10))
    late = s.tick(fwd)
    assert len(late) == 1 and late[0].missed == 24 * 360 - 1 and late[0].slot == fwd
    assert len(fires) == 5
    assert s.tick(clock.set(fwd + timedelta(seconds=5))) == []
    assert len(s.tick(clock.set(fwd + timedelta(seconds=10)))) == 1


def test_remove_and_reschedule():
    clock = FakeClock(START)
    s, fires = _scheduler(clock)
    s.add("a", IntervalSchedule(type="interval", seconds=5))
    s.remove("a")
    s.tick(clock.set(START + timedelta(seconds=60)))
    assert fires == []
    s.add("a", IntervalSchedule(type="interval", seconds=5))
    assert s.next_fire("a") == START + timedelta(seconds=65)


def test_a_failing_fire_never_stops_the_other_schedules():
    clock = FakeClock(START)
    logs: list = []
    seen = []

    def on_fire(fire):
        seen.append(fire.key)
        if fire.key == "bad":
            raise RuntimeError("boom")

    s = Scheduler(on_fire, now=clock, on_log=lambda lvl, t: logs.append((lvl, t)))
    s.add("bad", IntervalSchedule(type="interval", seconds=1))
    s.add("good", IntervalSchedule(type="interval", seconds=1))
    s.tick(clock.set(START + timedelta(seconds=1)))
    assert sorted(seen) == ["bad", "good"]
    assert ("error", "schedule 'bad': could not start: boom") in logs


def test_the_thread_fires_on_the_real_clock():
    got = threading.Event()
    fires = []
    s = Scheduler(lambda f: (fires.append(f), got.set()))
    s.start()
    try:
        s.add("quick", IntervalSchedule(type="interval", seconds=0.2))
        assert got.wait(5), "an interval of 0.2 s did not fire within 5 s"
    finally:
        s.stop()
    assert fires[0].lag_s < 1.0
    deadline = time.monotonic() + 1
    assert s._thread is None and time.monotonic() < deadline
