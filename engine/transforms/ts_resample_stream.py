"""`resample` in a streaming run: each tag's open bucket is kept as partial aggregates.

Every statistic of a bucket merges from parts (count, sum, min, max, the first and last non-null
value with their times, the worst quality rank), so the state is one row per tag whatever the
bucket length. A micro-batch's rows are aggregated per bucket and merged into the tag's open
bucket; every bucket of a tag before its newest is closed (a later record shows it ended) and is
emitted once. The open buckets are emitted when the stream stops (`flush`).

A record older than its tag's open bucket belongs to a bucket already emitted: it goes to
`rejected` with reason `late`, never into a second version of that bucket. Within the open
bucket order does not matter (first/last are picked by time).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from engine.transforms.base import OUT, REJECTED, with_reason
from engine.transforms.ts_common import Series, prepare, quality_name, quality_rank, to_polars_duration

_N, _SUM, _MIN, _MAX = "__rs_n", "__rs_sum", "__rs_min", "__rs_max"
_FIRST, _FIRST_T, _LAST, _LAST_T, _Q = "__rs_first", "__rs_first_t", "__rs_last", "__rs_last_t", "__rs_q"
_PARTS = [_N, _SUM, _MIN, _MAX, _FIRST, _FIRST_T, _LAST, _LAST_T, _Q]
_OPEN = "__rs_open"
_CONTEXT = "__rs_context"
_NEW = "_new"


@dataclass
class ResampleState:
    open: pl.DataFrame | None = None  # one row per tag: keys, bucket start, partial aggregates
    last: pl.DataFrame | None = None  # the last emitted bucket per tag (for fill)
    keys: list[str] | None = None
    time: str | None = None
    quality: bool = False  # a quality column was seen: buckets carry their worst quality
    schema: pl.Schema | None = None

    @property
    def empty(self) -> bool:
        return self.open is None or self.open.height == 0


def apply_stream(node, frame: pl.DataFrame, state: ResampleState, ctx) -> dict[str, pl.DataFrame]:
    cfg = node.config
    state.schema = frame.schema
    s = prepare(frame.lazy(), cfg)
    new, rejected = pl.collect_all([s.frame, s.rejected])
    state.keys, state.time = s.keys, s.time
    state.quality = state.quality or cfg.quality_field in s.schema
    late, new = _split_late(new, state, s)
    if late.height:
        reason = f"late: {s.time} is before the open bucket of its tag (that bucket was emitted already)"
        late = with_reason(late.lazy(), reason).collect()
        rejected = pl.concat([rejected, late], how="diagonal_relaxed") if rejected.height else late
    merged = _merge(state.open, _partials(new, cfg, s) if new.height else None, s)
    if merged is None:
        return {OUT: _empty(node, s), REJECTED: rejected}
    is_open = (
        pl.int_range(pl.len()).over(s.keys) == pl.len().over(s.keys) - 1
        if s.keys
        else pl.int_range(pl.len()) == pl.len() - 1
    )
    merged = merged.with_columns(is_open.alias(_OPEN))
    state.open = merged.filter(pl.col(_OPEN)).drop(_OPEN)
    closed = merged.filter(~pl.col(_OPEN)).drop(_OPEN)
    return {OUT: _emit(node, closed, state), REJECTED: rejected}


def flush(node, state: ResampleState, ctx) -> dict[str, pl.DataFrame]:
    opened, state.open = state.open, None
    if opened is None or not opened.height:
        return {}
    return {OUT: _emit(node, opened, state)}


def _split_late(new: pl.DataFrame, state: ResampleState, s: Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    if state.empty or not new.height:
        return new.clear(), new
    starts = state.open.select([*s.keys, pl.col(s.time).alias(_OPEN)])  # type: ignore[union-attr]
    if s.keys:
        joined = new.join(starts, on=s.keys, how="left", nulls_equal=True, maintain_order="left")
    else:
        joined = new.with_columns(pl.lit(starts.get_column(_OPEN)[0]).alias(_OPEN))
    late = (pl.col(s.time) < pl.col(_OPEN)).fill_null(False)
    return joined.filter(late).drop(_OPEN), joined.filter(~late).drop(_OPEN)


def _partials(new: pl.DataFrame, cfg, s: Series) -> pl.DataFrame:
    value = pl.col(cfg.value_field).cast(pl.Float64)
    present = value.is_not_null()
    time = pl.col(s.time)
    quality = (
        quality_rank(cfg.quality_field).max()
        if cfg.quality_field in s.schema
        else pl.lit(None, dtype=pl.Int8)
    )
    aggs = [
        present.sum().cast(pl.Int64).alias(_N),
        value.sum().alias(_SUM),
        value.min().alias(_MIN),
        value.max().alias(_MAX),
        value.drop_nulls().first().alias(_FIRST),
        time.filter(present).first().alias(_FIRST_T),
        value.drop_nulls().last().alias(_LAST),
        time.filter(present).last().alias(_LAST_T),
        quality.cast(pl.Int8).alias(_Q),
    ]
    every = to_polars_duration(cfg.interval)
    return (
        new.lazy()
        .group_by_dynamic(
            s.time, every=every, group_by=s.keys or None, closed="left", label="left", start_by="window"
        )
        .agg(aggs)
        .collect()
    )


def _merge(opened: pl.DataFrame | None, parts: pl.DataFrame | None, s: Series) -> pl.DataFrame | None:
    """The open buckets with this micro-batch's parts: a bucket in both is merged."""
    if opened is None or not opened.height:
        return parts.sort([*s.keys, s.time]) if parts is not None else None
    if parts is None:
        return opened
    on = [*s.keys, s.time]
    j = opened.join(parts, on=on, how="full", coalesce=True, suffix=_NEW, nulls_equal=True)

    def old(c: str) -> pl.Expr:
        return pl.col(c)

    def new(c: str) -> pl.Expr:
        return pl.col(c + _NEW)

    take_first = new(_FIRST_T).is_not_null() & (old(_FIRST_T).is_null() | (new(_FIRST_T) < old(_FIRST_T)))
    # equal times: the later micro-batch's value is the later one, as in a stable sort of both
    take_last = new(_LAST_T).is_not_null() & (old(_LAST_T).is_null() | (new(_LAST_T) >= old(_LAST_T)))
    merged = j.select(
        *on,
        (old(_N).fill_null(0) + new(_N).fill_null(0)).alias(_N),
        (old(_SUM).fill_null(0.0) + new(_SUM).fill_null(0.0)).alias(_SUM),
        pl.min_horizontal(old(_MIN), new(_MIN)).alias(_MIN),
        pl.max_horizontal(old(_MAX), new(_MAX)).alias(_MAX),
        pl.when(take_first).then(new(_FIRST)).otherwise(old(_FIRST)).alias(_FIRST),
        pl.when(take_first).then(new(_FIRST_T)).otherwise(old(_FIRST_T)).alias(_FIRST_T),
        pl.when(take_last).then(new(_LAST)).otherwise(old(_LAST)).alias(_LAST),
        pl.when(take_last).then(new(_LAST_T)).otherwise(old(_LAST_T)).alias(_LAST_T),
        pl.max_horizontal(old(_Q), new(_Q)).alias(_Q),
    )
    return merged.sort(on)


def _statistic(stat: str) -> pl.Expr:
    n, some = pl.col(_N), pl.col(_N) > 0
    return {
        "avg": pl.when(some).then(pl.col(_SUM) / n),
        "min": pl.col(_MIN),
        "max": pl.col(_MAX),
        "first": pl.col(_FIRST),
        "last": pl.col(_LAST),
        "count": n.cast(pl.Int64),
        "sum": pl.when(some).then(pl.col(_SUM)),
    }[stat]


def _emit(node, buckets: pl.DataFrame, state: ResampleState) -> pl.DataFrame:
    """Closed buckets as the batch node writes them, with fill between a tag's emitted buckets."""
    from engine.transforms.timeseries import _fill_empty

    cfg = node.config
    keys, time = state.keys or [], state.time or cfg.time_field
    columns = cfg.columns()
    stats = [
        _statistic(stat).cast(pl.Int64 if stat == "count" else pl.Float64).alias(name)
        for name, stat in columns.items()
    ]
    quality = cfg.quality_field if state.quality else None
    if quality:
        stats.append(quality_name(pl.col(_Q)).alias(quality))
    out = buckets.select(*keys, time, *stats)
    if cfg.fill == "none" or not out.height:
        return out
    every = to_polars_duration(cfg.interval)
    before = state.last.with_columns(pl.lit(True).alias(_CONTEXT)) if state.last is not None else None
    both = pl.concat([before, out], how="diagonal_relaxed") if before is not None else out
    filled = _fill_empty(both.lazy(), keys, time, every, cfg.fill, columns, quality).collect()
    if before is not None:  # tags without new buckets keep no context row in the grid
        filled = filled.filter(~pl.col(_CONTEXT).fill_null(False)).drop(_CONTEXT)
    state.last = _last_per_tag(
        pl.concat([state.last, filled], how="diagonal_relaxed") if state.last is not None else filled,
        keys,
        time,
    )
    return filled


def _last_per_tag(frame: pl.DataFrame, keys: list[str], time: str) -> pl.DataFrame:
    frame = frame.sort([*keys, time], maintain_order=True)
    return frame.group_by(keys, maintain_order=True).last() if keys else frame.tail(1)


def _empty(node, s: Series) -> pl.DataFrame:
    return node.apply([s.frame.clear()], None)[OUT].collect()
