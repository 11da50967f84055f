"""`cron` and `interval` schedules: when each pipeline fires, with a written-down policy for late
fires and clock jumps (docs/service.md, "Schedule policy").

The fire times come from APScheduler 3's triggers (`CronTrigger.from_crontab` with the schedule's
time zone, `IntervalTrigger`). The loop that waits for them is ours rather than APScheduler's
`BackgroundScheduler`, because that one reads the wall clock itself (`datetime.now` inside
`_process_jobs`) and a clock jump can only be tested there by changing the machine's clock; here
the clock is a constructor argument (`now`), and `tick(now)` is the whole decision, so the policy is
tested with a fake clock, exactly as it runs.

Policy, per schedule:
- **One fire per slot, never twice.** Each schedule remembers the slot it last fired; no slot at or
  before it fires again, whatever the clock does.
- **Late fires are coalesced, never skipped silently.** When the clock reaches a schedule's next
  slot late (the service was busy, stopped, or the clock jumped forward), the pipeline runs once,
  now; if more than one slot passed, the fire says how many were missed and between which times
  (the service logs it as "missed").
- **Clock back.** A cron slot is a time on the clock: after the clock goes back, slots that already
  fired are not fired again and the next slot stays the one after them. An interval measures
  elapsed time: after the clock goes back it is re-anchored at the new now (next fire one interval
  later), so it neither waits out the jump nor fires early.
- **Interval phases are spread** (`spread_s`, the service's `INTERVAL_SPREAD_S`; 0 in the bare
  class). Each interval schedule's slots are offset by its own fixed amount in [0, min(interval,
  spread_s)): the i-th schedule added gets frac(i x 0.618...) of that span (the golden-ratio
  sequence: any number of schedules lie nearly evenly over it). Pipelines loaded together (100
  spec files of `interval` 1 s at start-up) otherwise share one phase and all fire on the same
  instant, and their runs queue behind each other; spread, each slot comes when the engine is free.
  The first fire is at most `spread_s` later than one interval after scheduling. Cron slots are
  times on the clock and are never moved.
The scheduler's thread wakes at the next slot and at least once a second, so a jump is seen within
a second.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)
INTERVAL_SPREAD_S = 1.0  # the service's interval phases spread over up to this (see the policy)
MAX_WAIT_S = 1.0  # the loop looks at the clock at least this often (clock jumps, new schedules)
LATE_S = 1.0  # a fire later than this after its slot is logged as late
_TINY = timedelta(microseconds=1)
COUNT_CAP = 100_000  # missed slots are counted up to this many


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Fire:
    """One decision to run a schedule's pipeline."""

    key: str
    slot: datetime  # the slot fired (the latest one due, when several were coalesced)
    at: datetime  # the clock when it fired
    missed: int = 0  # earlier slots coalesced into this fire
    first_missed: datetime | None = None

    @property
    def lag_s(self) -> float:
        return (self.at - self.slot).total_seconds()

    def describe(self) -> str:
        if not self.missed:
            return f"fired for {_moment(self.slot)} UTC"
        return (
            f"missed {self.missed} fire{'s' if self.missed > 1 else ''} from "
            f"{self.first_missed:%Y-%m-%d %H:%M:%S} UTC; running once now for {_moment(self.slot)} UTC"
        )


def _moment(slot: datetime) -> str:
    """A slot as the log says it: to the second, with milliseconds when it is not on a second (an
    interval's slots are anchored when it was scheduled), so the lag to the run's start can be read."""
    text = f"{slot:%Y-%m-%d %H:%M:%S}"
    return f"{text}.{slot.microsecond // 1000:03d}" if slot.microsecond else text


def make_trigger(schedule: Any, now: datetime):
    """APScheduler's trigger for a `cron` or `interval` schedule (engine/spec/models.py)."""
    if schedule.type == "cron":
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(schedule.expression, timezone=schedule.timezone)
    if schedule.type == "interval":
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=schedule.seconds, start_date=now + _period(schedule), timezone=UTC)
    raise ValueError(f"not a timed schedule: {schedule.type}")


def _period(schedule: Any) -> timedelta:
    return timedelta(seconds=schedule.seconds)


GOLDEN = (5**0.5 - 1) / 2  # 0.618...: successive multiples, mod 1, fill [0, 1) nearly evenly


def spread_offset(index: int, schedule: Any, spread_s: float) -> timedelta:
    """The phase offset of the `index`-th interval schedule added: frac(index x GOLDEN) of
    [0, min(interval, spread_s)); zero for cron schedules and when `spread_s` is 0."""
    if schedule.type != "interval" or spread_s <= 0:
        return timedelta(0)
    span = min(float(schedule.seconds), spread_s)
    return timedelta(seconds=round(((index * GOLDEN) % 1.0) * span, 6))


class _Entry:
    def __init__(self, key: str, schedule: Any, now: datetime, offset: timedelta = timedelta(0)):
        self.key = key
        self.schedule = schedule
        self.offset = offset  # an interval's phase (spread_s); its slots are anchored at now + offset
        self.trigger = make_trigger(schedule, now + offset)
        self.last_slot: datetime | None = None
        self.next_slot = self.after(now)

    def after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after `moment` (UTC)."""
        nxt = self.trigger.get_next_fire_time(None, moment + _TINY)
        return nxt.astimezone(UTC) if nxt is not None else None


class Scheduler:
    """Fires `on_fire(Fire)` for each due slot of each schedule. `tick(now)` decides (tests call it
    with a fake clock); `start()` runs it on a thread against `now()`."""

    def __init__(
        self,
        on_fire: Callable[[Fire], None],
        now: Callable[[], datetime] = utc_now,
        on_log: Callable[[str, str], None] | None = None,
        spread_s: float = 0.0,
    ):
        self.on_fire = on_fire
        self.now = now
        self.spread_s = spread_s  # interval phases spread over up to this many seconds (0: none)
        self._added = 0  # interval schedules added so far: the index of the next one's offset
        self.on_log = on_log or (lambda level, text: log.log(logging.getLevelName(level.upper()), text))
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._last_now: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- schedules ---------------------------------------------------------------------------
    def add(self, key: str, schedule: Any) -> datetime | None:
        """Schedule (or re-schedule) `key`; returns its next fire time (UTC)."""
        with self._lock:
            index = self._added
            self._added += schedule.type == "interval"
        entry = _Entry(key, schedule, self.now(), spread_offset(index, schedule, self.spread_s))
        with self._lock:
            self._entries[key] = entry
        self._wake.set()
        return entry.next_slot

    def remove(self, key: str) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def next_fire(self, key: str) -> datetime | None:
        with self._lock:
            entry = self._entries.get(key)
        return entry.next_slot if entry else None

    # ---- the decision ------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> list[Fire]:
        """Fire every schedule due at `now` (default: the clock) per the policy; returns the fires."""
        now = self.now() if now is None else now
        back = self._last_now is not None and now < self._last_now
        if back:
            self.on_log("warning", f"the clock went back by {(self._last_now - now).total_seconds():.0f} s")
        self._last_now = now
        fires: list[Fire] = []
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            if (
                back
                and entry.schedule.type == "interval"
                and entry.next_slot is not None
                and entry.next_slot - now > _period(entry.schedule) + entry.offset
            ):  # elapsed time: re-anchor at the new now, one interval on (never sooner), same phase
                entry.trigger = make_trigger(entry.schedule, now + entry.offset)
                entry.next_slot = now + entry.offset + _period(entry.schedule)
                entry.last_slot = None
            fire = self._due(entry, now)
            if fire is not None:
                fires.append(fire)
        for fire in fires:
            if fire.missed:
                self.on_log("warning", f"schedule '{fire.key}': {fire.describe()}")
            try:
                self.on_fire(fire)
            except Exception as exc:  # one pipeline's trouble never stops the others' schedules
                self.on_log("error", f"schedule '{fire.key}': could not start: {exc}")
        return fires

    def _due(self, entry: _Entry, now: datetime) -> Fire | None:
        slot = entry.next_slot
        if slot is None or now < slot:
            return None
        if entry.last_slot is not None and slot <= entry.last_slot:  # never twice
            entry.next_slot = entry.after(max(now, entry.last_slot))
            return None
        # every slot in [slot, now] is due: the latest runs, the earlier ones are counted as missed
        missed, first, latest = 0, None, slot
        nxt = entry.after(slot)
        while nxt is not None and nxt <= now and missed < COUNT_CAP:
            if first is None:
                first = latest
            missed += 1
            latest = nxt
            nxt = entry.after(nxt)
        if nxt is not None and nxt <= now:  # more than COUNT_CAP: skip counting the rest
            nxt = entry.after(now)
        entry.last_slot = latest
        entry.next_slot = nxt
        return Fire(entry.key, latest, now, missed, first)

    # ---- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # never let the schedules die silently
                self.on_log("error", f"scheduler: {type(exc).__name__}: {exc}")
            self._wake.clear()
            self._wake.wait(self._wait_s())

    def _wait_s(self) -> float:
        now = self.now()
        with self._lock:
            slots = [e.next_slot for e in self._entries.values() if e.next_slot is not None]
        if not slots:
            return MAX_WAIT_S
        return max(0.0, min(MAX_WAIT_S, (min(slots) - now).total_seconds()))

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout)
            self._thread = None
