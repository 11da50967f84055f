"""Per-tag state that carries the sequential time-series nodes across micro-batches.

A streaming run pushes one micro-batch at a time; `rolling`, `rate_of_change`, `deadband` and
`quality_check` look back at earlier rows of the same tag. Rather than a second, incremental
implementation of each, the node keeps the few input rows per tag the next micro-batch needs (its
"tail": the previous row, the rolling window, the last kept value, the start of a flatline run),
runs its own batch `apply` over tail + new rows, and emits only the new rows. The result is the
batch result on the whole stream, row for row, and the state stays bounded by the tail.

Rows older than their tag's newest row (late, out of order) cannot be placed in the history
that is already emitted: they are processed on their own, without history, and leave the state
alone. `resample` keeps partial aggregates instead (see `ts_resample_stream`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from engine.context import NodeContext
from engine.transforms.base import OUT, REJECTED, Transform
from engine.transforms.ts_common import Series, prepare

EMIT = "__aggregator_emit"  # True: the row is new and not emitted yet (held rows stay True)
SEQ = "__aggregator_seq"  # position in the sorted tail + micro-batch, to find rows again
_WATERMARK = "__aggregator_watermark"

# (tail + micro-batch sorted by (tag, time) with SEQ, the node's output on it, the series) ->
# which rows of the first the next micro-batch needs
TailRule = Callable[[pl.DataFrame, pl.DataFrame, Series], pl.Expr]


@dataclass
class TailState:
    """One node's carried rows: prepared (time parsed, UTC), at most the tail of every tag."""

    history: pl.DataFrame | None = None
    schema: pl.Schema | None = None  # the last micro-batch's input schema (for the final pass)

    @property
    def empty(self) -> bool:
        return self.history is None or self.history.height == 0


def per_series(expr: pl.Expr, keys: list[str]) -> pl.Expr:
    return expr.over(keys) if keys else expr


def last_rows(n: int, keys: list[str]) -> pl.Expr:
    """The last `n` rows of every series."""
    size = pl.len().cast(pl.Int64)  # UInt32 would wrap below 0 for a tag shorter than n
    return per_series(pl.int_range(pl.len()), keys) >= per_series(size, keys) - n


def split_late(
    new: pl.DataFrame, history: pl.DataFrame | None, s: Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(late rows, on-time rows): late is older than the newest row its tag had before."""
    if history is None or history.height == 0 or new.height == 0:
        return new.clear(), new
    time = s.time
    if s.keys:
        marks = history.group_by(s.keys).agg(pl.col(time).max().alias(_WATERMARK))
        joined = new.join(marks, on=s.keys, how="left", nulls_equal=True, maintain_order="left")
    else:
        joined = new.with_columns(pl.lit(history.get_column(time).max()).alias(_WATERMARK))
    late = pl.col(time) < pl.col(_WATERMARK)  # null watermark (a new tag) is not late
    return (
        joined.filter(late.fill_null(False)).drop(_WATERMARK),
        joined.filter(~late.fill_null(False)).drop(_WATERMARK),
    )


def apply_with_history(
    transform: Transform,
    frame: pl.DataFrame,
    state: TailState,
    ctx: NodeContext,
    *,
    tail: TailRule,
    hold_last: bool = False,
) -> dict[str, pl.DataFrame]:
    """One micro-batch through `transform.apply`, continuing each tag from `state`.

    `hold_last` keeps every tag's newest row back until the tag's next row (or the flush): its
    result depends on what follows it (the stale check)."""
    cfg = transform.config
    state.schema = frame.schema
    s = prepare(frame.lazy(), cfg)  # type: ignore[arg-type]
    new, rejected = pl.collect_all([s.frame, s.rejected])
    late, new = split_late(new, state.history, s)
    parts: list[pl.DataFrame] = []
    if late.height:  # on their own, without history; the state does not move back
        parts.append(transform.apply([late.lazy()], ctx)[OUT].collect())
    combined = _concat([state.history, new.with_columns(pl.lit(True).alias(EMIT))])
    if combined is not None and combined.height:
        parts.append(_run(transform, combined, state, ctx, s, tail, hold_last))
    out = _concat(parts)
    return {OUT: out if out is not None else new.clear(), REJECTED: rejected}


def flush_with_history(transform: Transform, state: TailState, ctx: NodeContext) -> dict[str, pl.DataFrame]:
    """The held rows (never emitted yet), computed with what the stream ended with."""
    history, state.history = state.history, None
    if history is None or not history.height or not history.get_column(EMIT).any():
        return {}
    out = transform.apply([history.lazy()], ctx)[OUT].collect()
    return {OUT: out.filter(pl.col(EMIT)).drop(EMIT)}


def _run(
    transform: Transform,
    combined: pl.DataFrame,
    state: TailState,
    ctx: NodeContext,
    s: Series,
    tail: TailRule,
    hold_last: bool,
) -> pl.DataFrame:
    combined = combined.sort([*s.keys, s.time], maintain_order=True).with_row_index(SEQ)
    result = transform.apply([combined.lazy()], ctx)[OUT].collect()
    last = last_rows(1, s.keys)
    held = pl.lit(False)
    if hold_last:  # a held row is computed again later: keep its predecessor too
        held_seqs = combined.filter(last).get_column(SEQ)
        held = pl.col(SEQ).is_in(held_seqs.implode())
    keep = last_rows(2 if hold_last else 1, s.keys) | tail(combined, result, s)
    state.history = combined.filter(keep).with_columns((pl.col(EMIT) & held).alias(EMIT)).drop(SEQ)
    return result.filter(pl.col(EMIT) & ~held).drop(EMIT, SEQ)


def _concat(frames: list[pl.DataFrame | None]) -> pl.DataFrame | None:
    present = [f for f in frames if f is not None and f.width]
    if not present:
        return None
    return present[0] if len(present) == 1 else pl.concat(present, how="diagonal_relaxed")


def kept_rows(result: pl.DataFrame, s: Series) -> pl.Expr:
    """Rows whose SEQ the node kept: the newest output row of every tag (deadband's last kept)."""
    if not result.height:
        return pl.lit(False)
    newest = result.group_by(s.keys).agg(pl.col(SEQ).max()) if s.keys else result.select(pl.col(SEQ).max())
    return pl.col(SEQ).is_in(newest.get_column(SEQ).implode())


class StreamsWithHistory:
    """Mixin for a SeriesTransform that streams by re-running over each tag's tail (see above)."""

    def stream_state(self) -> TailState | None:
        return TailState()

    @property
    def holds_last(self) -> bool:
        return False

    def stream_tail(self, combined: pl.DataFrame, result: pl.DataFrame, s: Series) -> pl.Expr:
        """Rows besides each tag's newest that the next micro-batch needs."""
        return pl.lit(False)

    def apply_stream(
        self, frame: pl.DataFrame, state: TailState, ctx: NodeContext
    ) -> dict[str, pl.DataFrame]:
        return apply_with_history(
            self,  # type: ignore[arg-type]
            frame,
            state,
            ctx,
            tail=self.stream_tail,
            hold_last=self.holds_last,
        )

    def flush_stream(self, state: TailState, ctx: NodeContext) -> dict[str, pl.DataFrame]:
        return flush_with_history(self, state, ctx)  # type: ignore[arg-type]
