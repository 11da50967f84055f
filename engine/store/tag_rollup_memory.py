"""The open minutes' rollup partials, kept in memory by the process that writes the historian.

Issue 12: the rollup's advance read each minute's raw rows back from DuckDB once a minute, in five
slices of 20,000 tags (`tag_rollup.slice_sql`; DuckDB's arg_min/arg_max do not spill, so one
statement of 100,000 tags ran out of the 32 MB memory_limit): at 100,000 values a second that was
1.8 - 2.2 CPU-s a minute (five scans of the minute's 6 M rows), and five holds of the batches' lock
of ~0.2 s each, the largest part of the Modbus stream's p99. The writer has every row in hand when
it commits it, so it keeps the partial statistics of the minutes not yet rolled up instead
(`KeptMinutes`, one per `Historian` object, beside `tag_newest.NewestRows`), and an advance whose
minutes it kept whole writes them with one INSERT of one row per tag (`TagHistorian._advance_kept`).

Per committed frame the cost is one Polars `select` (the tag cast to a private Categorical, whose
codes are the slots: dense, stable for the process) and ~10 numpy scatters (`ufunc.at`): at 100,000
tags a second 0.62 - 0.90 CPU-s a minute with the partials' INSERT (how the frames are chunked
matters), against the SQL slices' 1.7 - 2.0 (`tests/benchmarks/bench_rollup_slices.py`).

The partials are the rollup's (`tag_rollup.partials_sql`), by the same rules: per tag, minute and
`is_bad` (quality `bad`): `rows` (all rows), `n` (rows with a value), `total`, `lo`, `hi`
(DuckDB's order of doubles: NaN above every number, so `min` is NaN only when every value is, and
`max` is NaN when any is), `first_ts`/`first_value` and `last_ts`/`last_value` (the earliest and
newest rows with a value; on a tie of timestamps the earlier, and the later, arrival).

When the kept partials are whole (`whole`): a minute is kept only when this object has seen
every row of it that any writer committed. All writers of a historian in this process share this
object (`of`) and feed it the frames they commit (`TagHistorian.committed`); what it cannot know
about makes the minutes concerned not whole, and their advance reads raw rows as before:
- rows committed before this object existed (an earlier process, a crash): at the first batch,
  minutes up to the newest raw row's (`start`) are not whole;
- `TagBatch` commits (a stream's few rows, no Polars: issue 12 item 4) are not kept: the minutes
  they touch are not whole (an idle one-tag pipeline never pays for this module);
- rows `AHEAD_MINUTES` or more past the wall clock's minute, and minutes beyond `MAX_MINUTES`
  kept at once (a rollup that cannot advance), are dropped rather than held: not whole;
- a retention run deletes raw rows: every minute kept so far stops being whole (`forget`).
Rows of minutes the rollup has passed (late rows, NULL timestamps) are not kept: `insert` folds
them in as extra partial rows, as it always did (`accepting_from`).
"""

from __future__ import annotations

import threading
import weakref

from engine.lazy import lazy_module
from engine.store import tag_newest
from engine.store.tag_rollup import COLUMNS, MINUTE_US

pl = lazy_module("polars")
np = lazy_module("numpy")

# Minutes kept at once (a rollup that cannot advance must not hold memory without end: ~7 MB a
# minute at 100,000 tags); the oldest beyond this stops being whole.
MAX_MINUTES = 4
# Rows this many minutes or more past the wall clock's minute are not kept (a device clock ahead:
# the rollup does not advance into the future, so their minutes would stay in memory).
AHEAD_MINUTES = 2
NO_MINUTE = -(2**62)  # "every minute": complete from the beginning of time


def _fields():
    """(name, dtype, initial value) of the arrays of `_Minute`."""
    return (
        ("rows", np.int64, 0),
        ("n", np.int64, 0),
        ("total", np.float64, 0.0),
        ("lo", np.float64, np.nan),  # np.fmin: NaN only while every value is NaN
        ("hi", np.float64, -np.inf),  # np.maximum: NaN once any value is
        ("first_ts", np.int64, np.iinfo(np.int64).max),
        ("first_value", np.float64, 0.0),
        ("last_ts", np.int64, np.iinfo(np.int64).min),
        ("last_value", np.float64, 0.0),
    )


class _Minute:
    """The partials of one minute and `is_bad`, one slot a tag (arrays grown on demand)."""

    __slots__ = ("first_ts", "first_value", "hi", "last_ts", "last_value", "lo", "n", "rows", "total")

    def __init__(self, size: int) -> None:
        for name, dtype, fill in _fields():
            setattr(self, name, np.full(size, fill, dtype=dtype))

    def grow(self, size: int) -> None:
        for name, dtype, fill in _fields():
            old = getattr(self, name)
            if len(old) < size:
                new = np.full(size, fill, dtype=dtype)
                new[: len(old)] = old
                setattr(self, name, new)

    def add(self, slots, stamps, values, valued) -> None:
        """Rows (arrival order) of this minute and `is_bad`: slots, timestamps (epoch µs), values
        (NaN where `valued` is False: no value)."""
        np.add.at(self.rows, slots, 1)
        if not valued.all():
            slots, stamps, values = slots[valued], stamps[valued], values[valued]
        if not len(slots):
            return
        np.add.at(self.n, slots, 1)
        with np.errstate(invalid="ignore"):  # inf - inf, NaN: as DuckDB's sum and max give them
            np.add.at(self.total, slots, values)
            np.fmin.at(self.lo, slots, values)
            np.maximum.at(self.hi, slots, values)
        np.maximum.at(self.last_ts, slots, stamps)
        newest = stamps == self.last_ts[slots]  # a repeated slot: the later assignment (arrival) wins
        self.last_value[slots[newest]] = values[newest]
        np.minimum.at(self.first_ts, slots, stamps)
        earliest = stamps == self.first_ts[slots]  # reversed: the earlier arrival is assigned last
        self.first_value[slots[earliest][::-1]] = values[earliest][::-1]

    def frame(self, names, minute: int, is_bad: bool):
        """The partial rows of the slots that had rows, in `tag_rollup.COLUMNS` order."""
        slots = np.flatnonzero(self.rows)
        n = self.n[slots]
        valueless = np.flatnonzero(n == 0)  # NULL statistics, as SQL's aggregates of no values
        time = pl.Datetime("us", "UTC")

        def doubles(array):
            return pl.Series(array[slots], dtype=pl.Float64).scatter(valueless, None)

        def stamps(array):
            return pl.Series(array[slots], dtype=pl.Int64).scatter(valueless, None).cast(time)

        return pl.DataFrame(
            {
                "tag": names.gather(slots),
                "minute": pl.repeat(minute, len(slots), dtype=pl.Int64, eager=True),
                "is_bad": pl.repeat(is_bad, len(slots), dtype=pl.Boolean, eager=True),
                "rows": self.rows[slots],
                "n": n,
                "total": doubles(self.total),
                "lo": doubles(self.lo),
                "hi": doubles(self.hi),
                "first_ts": stamps(self.first_ts),
                "first_value": doubles(self.first_value),
                "last_ts": stamps(self.last_ts),
                "last_value": doubles(self.last_value),
            }
        ).select(COLUMNS)


class KeptMinutes:
    """The partials of the minutes not yet rolled up, of one historian (see the module doc). Its
    callers hold the historian's `write_lock` (`tag_newest.NewestRows`): a writer from its INSERT
    to its COMMIT's `committed`, an advance between two batches; `_lock` guards the state anyway."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.complete_from: int | None = None  # None: not started (`start`); minutes from here on
        self.not_whole: set[int] = set()  # minutes from `complete_from` on that are not whole
        self.floor = NO_MINUTE  # minutes below this are rolled up (or being): not kept
        self.minutes: dict[tuple[int, bool], _Minute] = {}
        self.size = 0
        self._categories = None
        self._hold = None  # a Series of the categories: Polars keeps them while one is alive
        self.advances = 0  # advances written from the kept minutes

    # ---- what is whole ---------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.complete_from is not None

    def start(self, newest_raw_minute: int | None) -> None:
        """At the first batch: the newest minute of rows already in the table (None: none), which
        this object never saw; minutes after it are whole while every row passes through here."""
        with self._lock:
            if self.complete_from is None:
                self.complete_from = NO_MINUTE if newest_raw_minute is None else newest_raw_minute + 1

    def whole(self, first: int | None, end: int) -> bool:
        """Whether the minutes [first, end) (first None: every minute before `end`) were kept whole."""
        with self._lock:
            if self.complete_from is None:
                return False
            if (first if first is not None else NO_MINUTE) < self.complete_from:
                return False
            return not any(first is None or first <= m < end for m in self.not_whole)

    def lose(self, minutes) -> None:
        """These minutes are not whole (rows of them went to the table without passing here)."""
        with self._lock:
            self._lose(minutes)

    def _lose(self, minutes) -> None:
        for minute in minutes:
            minute = int(minute)
            if minute >= self.floor:
                self.not_whole.add(minute)
                self.minutes.pop((minute, False), None)
                self.minutes.pop((minute, True), None)

    def forget(self) -> None:
        """A retention run deleted raw rows: no minute kept so far is whole any more."""
        with self._lock:
            self._lose({m for m, _ in self.minutes})

    def accepting_from(self, minute: int | None) -> None:
        """Rows of minutes before `minute` are rolled up, or being (a slice by slice advance from
        raw rows): not kept, and what was kept of them goes."""
        with self._lock:
            if minute is None or minute <= self.floor:
                return
            self.floor = minute
            self.minutes = {k: v for k, v in self.minutes.items() if k[0] >= minute}
            self.not_whole = {m for m in self.not_whole if m >= minute}

    # ---- keeping ---------------------------------------------------------------------------------
    def _columns(self, frame) -> dict:
        """The frame's columns as numpy arrays, from one Polars `select` (a Series operation at a
        time measured ~0.1 ms each, a third of the cost): `at` (epoch µs, 0 where NULL), `known`
        (a timestamp), `slot` (the tag's code in this object's private Categorical: dense, stable),
        `value` (NaN where NULL), `valued`, `bad` (quality `bad`), `tagged` (a tag)."""
        if self._categories is None:
            self._categories = pl.Categories.random()
            self._hold = pl.Series([], dtype=pl.String).cast(pl.Categorical(self._categories))
        at, value = pl.col("timestamp").to_physical(), pl.col("value")
        out = frame.select(
            at=at.fill_null(0),
            known=at.is_not_null(),
            slot=pl.col("tag").cast(pl.Categorical(self._categories)).to_physical().fill_null(0),
            tagged=pl.col("tag").is_not_null(),
            value=value.fill_null(float("nan")),
            valued=value.is_not_null(),
            bad=(pl.col("quality") == "bad").fill_null(False),
        )
        return {c: out.get_column(c).to_numpy() for c in out.columns}

    def keep(self, frame, now_minute: int) -> None:
        """The rows of a committed TAG_SCHEMA frame, those of minutes before `floor` excepted."""
        with self._lock:
            self._keep(frame, now_minute)

    def _keep(self, frame, now_minute: int) -> None:
        if frame.get_column("timestamp").null_count() == frame.height:
            return
        c = self._columns(frame)
        at = c["at"]
        minutes = at // MINUTE_US  # floor division, as the rollup's minute
        take = c["known"] & (minutes >= self.floor)
        lost = take & ((minutes >= now_minute + AHEAD_MINUTES) | ~c["tagged"])
        if lost.any():  # held in memory for long, or not a row the rollup can hold: left to SQL
            self._lose(np.unique(minutes[lost]))
        take &= minutes >= self.complete_from  # type: ignore[operator]
        if self.not_whole:
            take &= ~np.isin(minutes, np.fromiter(self.not_whole, np.int64))
        if not take.any():
            return
        slots, values, valued, bad = c["slot"], c["value"], c["valued"], c["bad"]
        if not take.all():
            at, minutes, slots, values, valued, bad = (
                a[take] for a in (at, minutes, slots, values, valued, bad)
            )
        top = int(slots.max()) + 1
        if top > self.size:
            self.size = max(top, 2 * self.size, 1024)
            for kept in self.minutes.values():
                kept.grow(self.size)
        first, last = int(minutes.min()), int(minutes.max())
        present = [first] if first == last else np.unique(minutes).tolist()
        for minute in present:
            in_minute = None if first == last else minutes == minute
            for is_bad in (False, True):
                rows = bad if is_bad else ~bad
                rows = rows if in_minute is None else in_minute & rows
                if not rows.any():
                    continue
                kept = self.minutes.get((minute, is_bad))
                if kept is None:
                    kept = self.minutes[(minute, is_bad)] = _Minute(self.size)
                if rows.all():
                    kept.add(slots, at, values, valued)
                else:
                    kept.add(slots[rows], at[rows], values[rows], valued[rows])
        self._bound()

    def _bound(self) -> None:
        """At most MAX_MINUTES minutes kept: the oldest beyond them stop being whole."""
        minutes = sorted({m for m, _ in self.minutes})
        if len(minutes) > MAX_MINUTES:
            self._lose(minutes[: len(minutes) - MAX_MINUTES])

    # ---- an advance ------------------------------------------------------------------------------
    def partials(self, end: int):
        """The kept partial rows of the minutes before `end` (a frame of `tag_rollup.COLUMNS`), or
        None when there are none."""
        with self._lock:
            names = None if self._categories is None else self._categories.to_series()
            frames = [
                kept.frame(names, minute, is_bad)
                for (minute, is_bad), kept in sorted(self.minutes.items())
                if minute < end
            ]
        return pl.concat(frames) if frames else None


_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def of(historian) -> KeptMinutes:
    """The kept minutes of this `Historian` object (its writers share them)."""
    return tag_newest.shared(_KEPT, historian, KeptMinutes)
