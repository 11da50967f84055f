"""The 1-minute rollup of the tag historian: per tag per minute, the partial statistics from which
every bucket of whole minutes (1m, 5m, 1h, 1d...) is computed without reading raw rows.

Why: rows arrive in time order, all tags interleaved, so every DuckDB row group holds every tag and
zone maps cannot skip anything for a one-tag query: one tag over 10 M rows scanned all 10 M. The
rollup holds about 1/40 as many rows at one value per second.

How it is written: the rollup covers every raw row older than the minute `rolled_up_to` (a one-row
table) and none newer; raw rows of the newest minutes stay raw. When a batch's newest timestamp has
moved on, the minutes in between are aggregated from the raw table (zone maps find those recent
rows) and `rolled_up_to` moves. Not in the batch's transaction (issue 12: a minute of 100,000 tags
took 3 s there at load 11, the batches queued behind it): once the batch is committed, one slice of
TAGS_PER_SLICE tags a transaction, each between two batches (`slice_sql`, `Advance`,
`TagHistorian.advance_rollup`); the last slice moves `rolled_up_to` (`move_sql`). Rows older than
`rolled_up_to` that arrive later (and rows without a timestamp, and rows of an advance's minutes
for tags whose slice is done) are folded in with the batch as extra partial rows (`insert_sql`),
which `compact_sql` merges now and then. An advance a crash stopped between its slices leaves rows
of minutes from `rolled_up_to` on, which the next open deletes (`unfinished_sql`). Aggregating a whole
minute at once measured 5x cheaper per row than a partial row set per 10k-row batch (8 rows per
group instead of 40 at 1,000 tags and one value per second). Queries take whole minutes before
`rolled_up_to` from the rollup and the rest from raw rows, read in one snapshot.

A rollup row is the partial statistics of the rows of one tag in one minute, split by `is_bad`
(quality `bad` or not), so that a default query (bad values left out) and `include_bad` both stay
exact: `rows` (all rows, valued or not: gives `bad_count`), `n` (valued rows), `total`, `lo`, `hi`,
and `first_ts`/`first_value`, `last_ts`/`last_value` (the earliest and newest valued rows).
`count`, `min`, `max`, `first` and `last` recombine exactly; `sum` and `avg` are sums of partial
sums, equal to the raw computation up to floating-point rounding (DuckDB's own parallel sum over raw
rows has no fixed order either).

Rows without a timestamp go in with a NULL minute, never compacted; queries over all time show them
in a NULL bucket, as the raw query does.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTES_TABLE = "tag_minutes"
STATE_TABLE = "tag_minutes_state"  # one row: `rolled_up_to`, a minute number (NULL: none yet)
MINUTE_US = 60_000_000
COLUMNS = (
    "tag",
    "minute",
    "is_bad",
    "rows",
    "n",
    "total",
    "lo",
    "hi",
    "first_ts",
    "first_value",
    "last_ts",
    "last_value",
)


def floor_div(expr: str, width: int) -> str:
    """Floor division by a positive constant in SQL (DuckDB's `//` truncates towards zero)."""
    return f"({expr} // {width} - ({expr} % {width} < 0)::BIGINT)"


MINUTE_OF_TIMESTAMP = floor_div("epoch_us(timestamp)", MINUTE_US)


def create_sql() -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {MINUTES_TABLE} (tag VARCHAR NOT NULL, minute BIGINT,"
        " is_bad BOOLEAN NOT NULL, rows BIGINT, n BIGINT, total DOUBLE, lo DOUBLE, hi DOUBLE,"
        " first_ts TIMESTAMPTZ, first_value DOUBLE, last_ts TIMESTAMPTZ, last_value DOUBLE)"
    )


def partials_sql(source: str, where: str = "") -> str:
    """Per tag, minute and `is_bad`, the partial statistics of the raw rows of `source` (a table or
    view with the `tags` columns), in `COLUMNS` order. Ten plain aggregates: measured twice as fast
    as one row per minute with both sets as FILTERed aggregates side by side."""
    valued = "FILTER (WHERE value IS NOT NULL)"
    return (
        f"SELECT tag, {MINUTE_OF_TIMESTAMP} AS minute, quality IS NOT DISTINCT FROM 'bad' AS is_bad,"
        " count(*) AS rows, count(value) AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi,"
        # arg_min/arg_max skip NULL values themselves; the timestamps need the filter
        f" min(timestamp) {valued} AS first_ts, arg_min(value, timestamp) AS first_value,"
        f" max(timestamp) {valued} AS last_ts, arg_max(value, timestamp) AS last_value"
        f" FROM {source} {where} GROUP BY ALL"
    )


def state_sql() -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (rolled_up_to BIGINT)",
        f"INSERT INTO {STATE_TABLE} SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM {STATE_TABLE})",
    ]


def rolled_up_to_sql() -> str:
    return f"SELECT rolled_up_to FROM {STATE_TABLE}"


def insert_sql(source: str, where: str = "") -> str:
    """Append the partials of the raw rows of `source` to the rollup. Appending, not merging: an
    upsert (ON CONFLICT on a unique key) measured 2x the cost of the aggregation itself; partial
    rows of one key add up in every query anyway, and `compact_sql` merges them now and then."""
    return f"INSERT INTO {MINUTES_TABLE} ({', '.join(COLUMNS)}) {partials_sql(source, where)}"


def append_sql(source: str) -> str:
    """Append partial rows already made (`source` has the rollup's `COLUMNS`: the partials the
    writer kept in memory, `engine.store.tag_rollup_memory`) to the rollup."""
    names = ", ".join(COLUMNS)
    return f"INSERT INTO {MINUTES_TABLE} ({names}) SELECT {names} FROM {source}"


def minute_start(minute: int) -> str:
    return f"make_timestamptz({minute * MINUTE_US}::BIGINT)"


# Tags aggregated by one statement of `advance_sql`: DuckDB's arg_min/arg_max aggregate does not
# spill, and 100,000 tags in one statement ran out of the historian's 32 MB memory_limit (issue 12);
# slices of 20,000 measured 1.8 CPU-s a minute at 100,000 tags a second.
TAGS_PER_SLICE = 20_000


def advance_sql(source: str, old: int | None, new: int, tags: int = 0) -> list[str]:
    """Statements that roll the raw rows of minutes [old, new) up and move `rolled_up_to` to new;
    `tags` (about how many there are) splits the aggregation into slices of TAGS_PER_SLICE tags."""
    slices = slices_for(tags)
    return [*(slice_sql(source, old, new, slices, i) for i in range(slices)), move_sql(new)]


def slices_for(tags: int) -> int:
    return max(1, -(-tags // TAGS_PER_SLICE))


def slice_sql(source: str, old: int | None, new: int, slices: int, i: int) -> str:
    """The rollup of minutes [old, new) of the tags of slice `i` of `slices` (by hash of the tag)."""
    where = f"WHERE timestamp < {minute_start(new)}"
    if old is not None:
        where += f" AND timestamp >= {minute_start(old)}"
    if slices > 1:
        where += f" AND hash(tag) % {slices} = {i}"
    return insert_sql(source, where)


def move_sql(new: int) -> str:
    return f"UPDATE {STATE_TABLE} SET rolled_up_to = {new}"


def unfinished_sql(upto: int | None) -> str:
    """Deletes what an advance left behind when it stopped between its slices (a crash, a retention
    run): rollup rows of minutes from `rolled_up_to` on. Nothing else writes those: late rows go in
    only for minutes before it, and an advance moves it in the transaction of its last slice."""
    return f"DELETE FROM {MINUTES_TABLE} WHERE " + (
        "minute IS NOT NULL" if upto is None else f"minute >= {upto}"
    )


@dataclass
class Advance:
    """An advance of the rollup from minute `old` to `new` under way, slice by slice (issue 12): each
    slice is a transaction of its own between two batches, the last moves `rolled_up_to`. Until then
    readers take minutes from `old` on from raw rows, and a batch's rows of minutes [old, new) of
    the tags whose slice is done (`done` slices, in order) are late rows (`late_clause`): the slice
    that would have taken them has run."""

    old: int | None
    new: int
    slices: int
    done: int = 0

    def late_clause(self) -> str | None:
        if self.done == 0:
            return None
        clause = f"timestamp < {minute_start(self.new)}"
        if self.old is not None:
            clause = f"timestamp >= {minute_start(self.old)} AND {clause}"
        if self.slices > 1:
            clause += f" AND hash(tag) % {self.slices} < {self.done}"
        return f"({clause})"


def merged_sql(where: str) -> str:
    """The rollup rows matching `where`, one per tag, minute and `is_bad`."""
    return (
        "SELECT tag, minute, is_bad, sum(rows)::BIGINT AS rows, sum(n)::BIGINT AS n, sum(total) AS total,"
        " min(lo) AS lo, max(hi) AS hi, min(first_ts) AS first_ts, arg_min(first_value, first_ts) AS first_value,"
        " max(last_ts) AS last_ts, arg_max(last_value, last_ts) AS last_value"
        f" FROM {MINUTES_TABLE} {where} GROUP BY ALL"
    )


def compact_sql(from_minute: int) -> list[str]:
    """Statements (for one transaction) that merge the partial rows of every minute from
    `from_minute` on; minutes before it were merged by an earlier compaction. Rows go back ordered
    by tag, so that zone maps on `tag` can skip most of each row group for a one-tag query."""
    where = f"WHERE minute >= {from_minute}"
    return [
        f"CREATE OR REPLACE TEMP TABLE _merged_minutes AS {merged_sql(where)}",
        f"DELETE FROM {MINUTES_TABLE} {where}",
        f"INSERT INTO {MINUTES_TABLE} SELECT {', '.join(COLUMNS)} FROM _merged_minutes ORDER BY tag, minute",
        "DROP TABLE _merged_minutes",
    ]


def final_statistics(include_bad: bool) -> dict[str, str]:
    """The aggregates of partial rows into a bucket's statistics, and its `bad_count`."""
    only = "" if include_bad else " FILTER (WHERE NOT is_bad)"
    return {
        "avg": f"sum(total){only} / nullif(sum(n){only}, 0)::DOUBLE",
        "min": f"min(lo){only}",
        "max": f"max(hi){only}",
        "sum": f"sum(total){only}",
        "first": f"arg_min(first_value, first_ts){only}",
        "last": f"arg_max(last_value, last_ts){only}",
        "count": f"coalesce(sum(n){only}, 0)::BIGINT",
        "bad_count": "coalesce(sum(rows) FILTER (WHERE is_bad), 0)::BIGINT",
    }
