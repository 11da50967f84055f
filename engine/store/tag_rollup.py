"""The 1-minute rollup of the tag historian: per tag per minute, the partial statistics from which
every bucket of whole minutes (1m, 5m, 1h, 1d...) is computed without reading raw rows.

Why: rows arrive in time order, all tags interleaved, so every DuckDB row group holds every tag and
zone maps cannot skip anything for a one-tag query: one tag over 10 M rows scanned all 10 M. The
rollup holds about 1/60 as many rows at one value per second, and it is written in the same
transaction as the raw rows, so it is never behind and never ahead of them.

Each batch appends its own partial rows (one per tag, minute and `is_bad` in the batch), so a minute
that spans several batches has several rows until a compaction merges them; queries aggregate
partial rows whether merged or not, so compaction changes speed, never results.

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

MINUTES_TABLE = "tag_minutes"
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


def insert_sql(source: str, where: str = "") -> str:
    """Append the partials of the raw rows of `source` to the rollup. Appending, not merging: an
    upsert (ON CONFLICT on a unique key) measured 2x the cost of the aggregation itself per 10k-row
    batch; partial rows of the same minute add up in every query anyway, and `compact_sql` merges
    them now and then."""
    return f"INSERT INTO {MINUTES_TABLE} ({', '.join(COLUMNS)}) {partials_sql(source, where)}"


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
