"""The 'schedule fired' line names an interval's slot to the millisecond (its slots are anchored
when it was scheduled, not on a second), so the lag from slot to run start can be read from the
log; cron slots, on whole seconds, read as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.service.scheduler import Scheduler
from engine.spec.models import CronSchedule, IntervalSchedule


def _fires(schedule, start: datetime, later: timedelta):
    fires = []
    s = Scheduler(fires.append, now=lambda: start, on_log=lambda *_: None)
    s.add("p", schedule)
    s.tick(start + later)
    return fires


def test_an_interval_slot_is_said_to_the_millisecond():
    start = datetime(2026, 12, 2, 14, 0, 0, 123_456, tzinfo=UTC)
    fires = _fires(IntervalSchedule(type="interval", seconds=1), start, timedelta(seconds=1.5))
    assert [f.describe() for f in fires] == ["fired for 2026-12-02 14:00:01.123 UTC"]
    missed = _fires(IntervalSchedule(type="interval", seconds=1), start, timedelta(seconds=3.5))
    assert missed[0].describe().endswith("running once now for 2026-12-02 14:00:03.123 UTC")


def test_a_cron_slot_is_said_to_the_second():
    start = datetime(2026, 12, 2, 14, 0, 0, 500_000, tzinfo=UTC)
    fires = _fires(
        CronSchedule(type="cron", expression="* * * * *", timezone="UTC"), start, timedelta(minutes=1)
    )
    assert [f.describe() for f in fires] == ["fired for 2026-12-02 14:01:00 UTC"]
