"""Interval phases are spread (engine/service/scheduler.py `spread_s`, docs/service.md "Schedule
policy"): pipelines loaded together do not all fire on the same instant. With a fake clock, as the
rest of the policy (tests/engine/test_scheduler.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from engine.service.scheduler import Scheduler, spread_offset
from engine.spec.models import CronSchedule, IntervalSchedule

START = datetime(2026, 3, 10, 9, 59, 30, tzinfo=UTC)
EVERY_1S = IntervalSchedule(type="interval", seconds=1)


class FakeClock:
    def __init__(self, start: datetime):
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def set(self, t: datetime) -> datetime:
        self.t = t
        return t


def _hundred(clock: FakeClock, spread_s: float = 1.0):
    fires: list = []
    s = Scheduler(fires.append, now=clock, on_log=lambda *_: None, spread_s=spread_s)
    for i in range(100):
        s.add(f"p{i:03d}", EVERY_1S)
    return s, fires


def test_a_hundred_pipelines_added_at_once_fire_spread_over_their_second():
    clock = FakeClock(START)
    s, _ = _hundred(clock)
    slots = sorted(s.next_fire(k) for k in s.keys())  # noqa: SIM118 - Scheduler.keys(), not a dict
    assert len(set(slots)) == 100
    assert slots[0] >= START + timedelta(seconds=1) and slots[-1] < START + timedelta(seconds=2)
    gaps = [(b - a).total_seconds() for a, b in pairwise(slots)]
    assert max(gaps) < 0.03  # nearly even: 10 ms apart on average
    window = timedelta(milliseconds=50)
    assert max(sum(1 for t in slots if a <= t < a + window) for a in slots) <= 7


def test_spread_slots_each_fire_once_a_second_on_time():
    clock = FakeClock(START)
    s, fires = _hundred(clock)
    first = {k: s.next_fire(k) for k in s.keys()}  # noqa: SIM118
    step = timedelta(milliseconds=5)
    t = START
    while t < START + timedelta(seconds=6):
        t = clock.set(t + step)
        s.tick(t)
    by_key: dict[str, list] = {}
    for f in fires:
        by_key.setdefault(f.key, []).append(f)
    assert sorted(by_key) == sorted(s.keys())
    for key, got in by_key.items():
        due = [first[key] + timedelta(seconds=k) for k in range(6) if first[key] + timedelta(seconds=k) <= t]
        assert [f.slot for f in got] == due  # every slot up to the clock, each once, in order
        assert all(f.missed == 0 and timedelta(0) <= f.at - f.slot < step for f in got)
        assert all((b.slot - a.slot) == timedelta(seconds=1) for a, b in pairwise(got))


def test_the_clock_going_back_keeps_each_phase():
    clock = FakeClock(START)
    s, fires = _hundred(clock)
    offset = s.next_fire("p007") - START - timedelta(seconds=1)
    assert timedelta(0) < offset < timedelta(seconds=1)
    assert s.tick(START) == []
    back = clock.set(START - timedelta(hours=1))
    assert s.tick(back) == []
    assert s.next_fire("p007") == back + offset + timedelta(seconds=1)  # one interval on, same phase
    early = s.tick(clock.set(back + offset + timedelta(milliseconds=999)))
    assert all(f.key != "p007" for f in early)
    late = [f for f in s.tick(clock.set(back + offset + timedelta(seconds=1))) if f.key == "p007"]
    assert len(late) == 1 and late[0].missed == 0
    assert not fires or all(f.key != "p007" or f in late for f in fires)


def test_cron_is_never_moved_and_zero_spread_keeps_the_old_anchor():
    clock = FakeClock(START)
    s = Scheduler(lambda f: None, now=clock, on_log=lambda *_: None, spread_s=1.0)
    s.add("every10", IntervalSchedule(type="interval", seconds=10))  # index 0: offset 0
    s.add("hourly", CronSchedule(type="cron", expression="0 * * * *", timezone="UTC"))
    s.add("every10b", IntervalSchedule(type="interval", seconds=10))
    assert s.next_fire("every10") == START + timedelta(seconds=10)
    assert s.next_fire("hourly") == datetime(2026, 3, 10, 10, tzinfo=UTC)
    assert START + timedelta(seconds=10) < s.next_fire("every10b") < START + timedelta(seconds=11)
    plain = Scheduler(lambda f: None, now=clock, on_log=lambda *_: None)
    for i in range(5):
        plain.add(f"k{i}", EVERY_1S)
    assert {plain.next_fire(f"k{i}") for i in range(5)} == {START + timedelta(seconds=1)}


def test_an_offset_stays_below_a_short_interval():
    short = IntervalSchedule(type="interval", seconds=0.2)
    offsets = [spread_offset(i, short, 1.0) for i in range(1000)]
    assert all(timedelta(0) <= o < timedelta(seconds=0.2) for o in offsets)
    assert len(set(offsets)) > 900
