"""The table of the newest record of every tag, `tag_last` (one row per tag, primary key `tag`).

Who writes it: the historian's writer keeps the newest rows it committed in memory and upserts them
into `tag_last` every few seconds, each changed tag once (`engine.store.tag_newest`; readers in the
writer's process see the table merged with those rows, and a crash is repaired at the next open).

`tag_last_log` is what earlier versions wrote instead: each batch appended its newest row per tag to
it (numbered by a sequence, so that arrival order breaks timestamp ties), and every few batches it
was folded into `tag_last`. Nothing appends to it any more; a historian written by such a version may
still hold rows there, so readers see `tag_last` and the log together (`newest_sql`,
`known_tags_sql`), and the writer's first open folds the log into the table (`fold_sql`).

The rule for "newest" is the same everywhere: the latest timestamp wins, a NULL timestamp is older
than any, and among equal timestamps the later arrival wins.
"""

from __future__ import annotations

LAST_TABLE = "tag_last"
LOG_TABLE = "tag_last_log"
_SEQUENCE = "tag_last_seq"
LAST_COLUMNS = ("tag", "timestamp", "value", "value_text", "quality", "reason", "source", "received_at")
_TYPES = (
    "tag VARCHAR{key}, timestamp TIMESTAMPTZ, value DOUBLE, value_text VARCHAR, quality VARCHAR,"
    " reason VARCHAR, source VARCHAR, received_at TIMESTAMPTZ"
)


def create_sql() -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {LAST_TABLE} ({_TYPES.format(key=' PRIMARY KEY')})",
        f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} ({_TYPES.format(key='')}, seq BIGINT)",
        f"CREATE SEQUENCE IF NOT EXISTS {_SEQUENCE}",
    ]


def newest_sql(where: str = "") -> str:
    """One row per tag (`LAST_COLUMNS`): the newest of `tag_last` and the log, filtered by `where`."""
    names = ", ".join(LAST_COLUMNS)
    return (
        f"SELECT {names} FROM (SELECT {names}, -1 AS seq FROM {LAST_TABLE} UNION ALL"
        f" SELECT {names}, seq FROM {LOG_TABLE}) {where}"
        " QUALIFY row_number() OVER (PARTITION BY tag ORDER BY timestamp DESC NULLS LAST, seq DESC) = 1"
    )


def known_tags_sql() -> str:
    return f"SELECT tag FROM {LAST_TABLE} UNION SELECT tag FROM {LOG_TABLE}"


def fold_sql() -> list[str]:
    """Statements (for one transaction) folding the log into `tag_last` and emptying it."""
    names = ", ".join(LAST_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in LAST_COLUMNS[1:])
    newest_logged = (
        f"SELECT {names} FROM {LOG_TABLE}"
        " QUALIFY row_number() OVER (PARTITION BY tag ORDER BY timestamp DESC NULLS LAST, seq DESC) = 1"
    )
    return [
        f"INSERT INTO {LAST_TABLE} ({names}) {newest_logged} ON CONFLICT (tag) DO UPDATE SET {updates}"
        f" WHERE excluded.timestamp >= {LAST_TABLE}.timestamp OR {LAST_TABLE}.timestamp IS NULL",
        f"DELETE FROM {LOG_TABLE}",
    ]
