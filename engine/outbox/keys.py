"""The idempotency key of every record a remote destination delivers, and the box's edge id.

A key is `<edge>/<pipeline>/<destination>/<record part>`, each part escaped (`\\` -> `\\\\`, `/` and
`|` -> `\\/`, `\\|`, null -> `\\N`) so that two different records never share a key:

- tag data (`engine.tags.TAG_SCHEMA`: `tag` and `timestamp` columns): `tag|source|timestamp`, the
  timestamp in UTC epoch microseconds (source only when the frame has one);
- otherwise the destination's configured `key` columns, joined by `|`;
- otherwise the record's sequence number in the outbox (`seq:<outbox epoch>:<n>`), which the outbox
  assigns once, at append, and stores with the record (a direct run: `seq:<run id>:<n>`).

Keys are computed once, when a batch is appended, and stored inside the batch (the `_key` column),
so a retry, a restart or a redelivery after a crash sends the same key. Vectorised: Polars string
expressions over whole columns, no Python loop per record.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import polars as pl

from engine.outbox.target import KEY_COLUMN

EDGE_ID_FILE = "edge_id"
_EDGE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


_known: dict[str, str] = {}  # data dir -> its edge id, read once per process


def edge_id(data_dir: Path | str) -> str:
    """This box's stable id: kept in `<data dir>/edge_id`, made once (a random 12-hex id)."""
    path = Path(data_dir) / EDGE_ID_FILE
    known = _known.get(str(path))
    if known is not None:
        return known
    try:
        value = path.read_text(encoding="utf-8").strip()
        if _EDGE_ID_RE.match(value):
            _known[str(path)] = value
            return value
    except FileNotFoundError:
        pass
    return set_edge_id(data_dir, "edge-" + uuid.uuid4().hex[:12])


def set_edge_id(data_dir: Path | str, value: str) -> str:
    """Set the box's id (letters, digits, `.`, `_`, `:`, `-`; at most 64). Written atomically."""
    if not _EDGE_ID_RE.match(value or ""):
        raise ValueError(
            f"edge id {value!r}: use 1-64 letters, digits, '.', '_', ':' or '-' (starting with a letter or digit)"
        )
    path = Path(data_dir) / EDGE_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{EDGE_ID_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _known[str(path)] = value
    return value


def escape(text: str | None) -> str:
    """One key part, escaped (the scalar twin of `_escaped`)."""
    if text is None:
        return "\\N"
    return text.replace("\\", "\\\\").replace("/", "\\/").replace("|", "\\|")


def _escaped(expr: pl.Expr) -> pl.Expr:
    text = (
        expr.str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all("/", "\\/", literal=True)
        .str.replace_all("|", "\\|", literal=True)
    )
    return text.fill_null("\\N")


def _as_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    dtype = frame.schema[column]
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        # Epoch microseconds in UTC: independent of the column's unit and time zone.
        return col.dt.epoch("us").cast(pl.String)
    if dtype == pl.String:
        return col
    if dtype.is_nested() or dtype == pl.Object:
        raise ValueError(f"key column '{column}' is {dtype}: a key column must be a scalar")
    return col.cast(pl.String)


def is_tag_frame(frame: pl.DataFrame) -> bool:
    return "tag" in frame.columns and "timestamp" in frame.columns


def key_columns(frame: pl.DataFrame, key: list[str] | None) -> list[str] | None:
    """The columns a frame's keys are made of (None: the outbox sequence)."""
    if key:
        missing = [c for c in key if c not in frame.columns]
        if missing:
            raise ValueError(
                f"key column '{missing[0]}' is not in the data (columns: {', '.join(frame.columns)})"
            )
        return list(key)
    if is_tag_frame(frame):
        return ["tag", "source", "timestamp"] if "source" in frame.columns else ["tag", "timestamp"]
    return None


def with_keys(
    frame: pl.DataFrame,
    *,
    edge: str,
    pipeline: str,
    destination: str,
    key: list[str] | None = None,
    first_seq: int = 0,
    seq_scope: str = "",
) -> pl.DataFrame:
    """`frame` plus the `_key` column (replacing one it has). `first_seq` is the outbox sequence
    of the frame's first record, used when the records have no key of their own, scoped by
    `seq_scope` (the outbox file's epoch, or a direct run's id) so that a sequence never repeats."""
    prefix = "/".join(escape(p) for p in (edge, pipeline, destination)) + "/"
    if KEY_COLUMN in frame.columns:
        frame = frame.drop(KEY_COLUMN)
    columns = key_columns(frame, key)
    if columns is None:
        part = pl.lit(f"seq:{escape(seq_scope)}:") + (
            pl.int_range(0, pl.len(), dtype=pl.Int64) + first_seq
        ).cast(pl.String)
    else:
        part = pl.concat_str([_escaped(_as_text(frame, c)) for c in columns], separator="|")
    return frame.with_columns((pl.lit(prefix) + part).alias(KEY_COLUMN))
