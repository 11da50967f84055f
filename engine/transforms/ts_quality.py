"""`quality_check`: flag suspicious values per tag (stale, flatline, out of range, too fast, gaps).

Each check is on when its parameter is given and adds one boolean column; `qc_reasons` names the
failed checks (comma-joined, in the order stale, flatline, range, rate, gap; null when all pass).
All checks are columnar Polars over the tag's rows sorted by time:

- stale (`stale_after`): the next row of the tag came more than `stale_after` later, or, for the
  tag's last row, `now` (default: the run's start) is more than `stale_after` later.
- flatline (`flatline_after`): the value has not changed for at least this long (a duration, from
  the first row of the unchanged run) or this many rows (a count, this row included). Only rows from
  the point the threshold is reached are flagged, so the flag never depends on the future.
- range (`min`, `max`): the value is below min or above max (inclusive bounds are fine).
- rate (`rate_limit`): |change since the previous row| / seconds between them > rate_limit.
- gap (`max_gap`): more than `max_gap` passed since the previous row of the tag.

Null values fail no value check (range, rate, flatline); a gap record is caught by stale and gap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from engine.context import NodeContext
from engine.transforms.common import config_error
from engine.transforms.isotime import parse_literal
from engine.transforms.registry import register
from engine.transforms.timeseries import rate_expr
from engine.transforms.ts_common import (
    QUALITY_RANK,
    Series,
    SeriesConfig,
    SeriesTransform,
    duration_seconds,
    prepare,
    quality_name,
    quality_rank,
    validated_duration,
)
from engine.transforms.ts_state import (
    SEQ,
    StreamsWithHistory,
    TailState,
    flush_with_history,
    last_rows,
    per_series,
)

CHECKS = ("stale", "flatline", "range", "rate", "gap")
REASONS = "qc_reasons"
_RUN = "__aggregator_qc_run"


class QualityCheckConfig(SeriesConfig):
    type: Literal["quality_check"] = "quality_check"
    stale_after: str | None = Field(
        None, description="Stale check: longest wait for the next value (`5m`, `PT30S`)."
    )
    flatline_after: str | int | None = Field(
        None, description="Flatline check: unchanged for this long (`10m`) or this many rows (an integer)."
    )
    min: float | None = Field(None, description="Range check: lowest allowed value.")
    max: float | None = Field(None, description="Range check: highest allowed value.")
    rate_limit: float | None = Field(
        None, gt=0, description="Rate check: highest allowed |change| per second."
    )
    max_gap: str | None = Field(
        None, description="Gap check: longest allowed time between two rows of a tag."
    )
    now: str | None = Field(
        None,
        description="Stale check of each tag's last row: ISO 8601 time judged against (default: run start).",
    )
    downgrade: Literal["none", "uncertain", "bad"] = Field(
        "none",
        description="Failed rows get at least this quality (never better than before); a null reason "
        "becomes qc_reasons.",
    )
    quality_field: str = Field("quality", description="Quality text field changed by downgrade.")
    reason_field: str = Field("reason", description="Reason text field filled by downgrade (when present).")

    @field_validator("stale_after", "max_gap")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        return validated_duration(value, fixed=True)

    @field_validator("flatline_after")
    @classmethod
    def _flatline(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int):
            if value < 2:
                raise ValueError("a row count for flatline_after must be at least 2")
            return value
        return validated_duration(value, fixed=True)

    @field_validator("now")
    @classmethod
    def _now(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_literal(value)
            except ValueError:
                raise ValueError(
                    f"'{value}' is not an ISO 8601 timestamp (e.g. 2024-01-05T10:30:00Z)"
                ) from None
        return value

    @model_validator(mode="after")
    def _some_check(self) -> QualityCheckConfig:
        name = type(self).__name__
        if not self.enabled():
            raise config_error(
                name,
                ("stale_after",),
                "give at least one check: stale_after, flatline_after, min, max, rate_limit or max_gap",
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise config_error(name, ("min",), f"min {self.min} is above max {self.max}")
        return self

    def enabled(self) -> list[str]:
        given = {
            "stale": self.stale_after is not None,
            "flatline": self.flatline_after is not None,
            "range": self.min is not None or self.max is not None,
            "rate": self.rate_limit is not None,
            "gap": self.max_gap is not None,
        }
        return [check for check in CHECKS if given[check]]


@register
class QualityCheck(StreamsWithHistory, SeriesTransform):
    """Flag stale, flatlined, out-of-range, too-fast and gappy values per tag; optionally downgrade quality."""

    type = "quality_check"
    title = "Quality check"
    category = "validate"
    Config = QualityCheckConfig

    @property
    def streaming(self) -> bool:
        # range looks at one row; every other check compares with neighbouring rows of the tag
        return self.config.enabled() == ["range"]  # type: ignore[attr-defined]

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: QualityCheckConfig = self.config  # type: ignore[assignment]
        s = prepare(inputs[0], cfg)
        value, time = pl.col(cfg.value_field).cast(pl.Float64), pl.col(s.time)
        now = parse_literal(cfg.now) if cfg.now else ctx.run.started_at
        frame = s.frame
        if cfg.flatline_after is not None:  # number the unchanged runs within each tag
            changed = s.over(value.ne_missing(value.shift(1)))
            frame = frame.with_columns(changed.alias(_RUN)).with_columns(s.over(pl.col(_RUN).cum_sum()))
        flags = {check: _check(check, cfg, s, value, time, now).fill_null(False) for check in cfg.enabled()}
        columns = [expr.alias(f"qc_{name}") for name, expr in flags.items()]
        named = [pl.when(pl.col(f"qc_{name}")).then(pl.lit(name)) for name in flags]
        reasons = pl.concat_str(named, separator=",", ignore_nulls=True)
        out = frame.with_columns(columns).with_columns(pl.when(reasons != "").then(reasons).alias(REASONS))
        if cfg.flatline_after is not None:
            out = out.drop(_RUN)
        if cfg.downgrade != "none":
            out = out.with_columns(_downgrade(cfg, s.schema))
        return s.outputs(out)

    # ---- streaming: the previous row, the flatline run, the row waiting for its successor ----
    def stream_state(self) -> TailState | None:
        return None if self.streaming else TailState()

    @property
    def holds_last(self) -> bool:
        # stale depends on the next row of the tag: a tag's newest row waits for it (or the stop)
        return self.config.stale_after is not None  # type: ignore[attr-defined]

    def stream_tail(self, combined: pl.DataFrame, result: pl.DataFrame, s: Series) -> pl.Expr:
        after = self.config.flatline_after  # type: ignore[attr-defined]
        if after is None:
            return pl.lit(False)  # rate, gap, stale: the newest row is enough
        if isinstance(after, int):  # the flag only needs to know n - 1 rows of the run came before
            return last_rows(after if self.holds_last else after - 1, s.keys)
        value = pl.col(self.config.value_field).cast(pl.Float64)  # type: ignore[attr-defined]
        run = per_series(per_series(value.ne_missing(value.shift(1)), s.keys).cum_sum(), s.keys)
        runs = combined.with_columns(run.alias(_RUN))
        newest_run = runs.filter(pl.col(_RUN) == per_series(pl.col(_RUN).max(), s.keys))
        starts = (  # the first row of every tag's current run: where its duration is counted from
            newest_run.group_by(s.keys).agg(pl.col(SEQ).min())
            if s.keys
            else newest_run.select(pl.col(SEQ).min())
        )
        return pl.col(SEQ).is_in(starts.get_column(SEQ).implode())

    def flush_stream(self, state: TailState, ctx: NodeContext) -> dict[str, pl.DataFrame]:
        cfg: QualityCheckConfig = self.config  # type: ignore[assignment]
        node = self
        if cfg.now is None:  # the held rows are judged against the moment the stream stops
            now = datetime.now(UTC).isoformat()
            node = type(self)(cfg.model_copy(update={"now": now}), self.node_id)
        return flush_with_history(node, state, ctx)


def _check(check: str, cfg: QualityCheckConfig, s, value: pl.Expr, time: pl.Expr, now: datetime) -> pl.Expr:
    if check == "range":
        low = value < cfg.min if cfg.min is not None else pl.lit(False)
        high = value > cfg.max if cfg.max is not None else pl.lit(False)
        return low | high
    if check == "rate":
        return rate_expr(value, time, s).abs() > cfg.rate_limit
    if check == "gap":
        return s.over(time.diff().dt.total_microseconds()) > duration_seconds(cfg.max_gap) * 1e6  # type: ignore[arg-type]
    if check == "stale":
        following = s.over(time.shift(-1)).fill_null(pl.lit(now, dtype=pl.Datetime("us", "UTC")))
        return (following - time).dt.total_microseconds() > duration_seconds(cfg.stale_after) * 1e6  # type: ignore[arg-type]
    return _flatline(cfg.flatline_after, s, value, time)  # type: ignore[arg-type]


def _flatline(after: str | int, s, value: pl.Expr, time: pl.Expr) -> pl.Expr:
    keys = [*s.keys, _RUN]
    if isinstance(after, int):
        position = pl.int_range(1, pl.len() + 1).over(keys)
        return value.is_not_null() & (position >= after)
    since = (time - time.first().over(keys)).dt.total_microseconds()
    return value.is_not_null() & (since >= duration_seconds(after) * 1e6)


def _downgrade(cfg: QualityCheckConfig, schema: pl.Schema) -> list[pl.Expr]:
    failed = pl.col(REASONS).is_not_null()
    floor = QUALITY_RANK[cfg.downgrade]
    exprs = []
    if cfg.quality_field in schema:
        worse = quality_name(pl.max_horizontal(quality_rank(cfg.quality_field).fill_null(0), pl.lit(floor)))
        exprs.append(
            pl.when(failed).then(worse).otherwise(pl.col(cfg.quality_field)).alias(cfg.quality_field)
        )
    else:
        exprs.append(
            pl.when(failed).then(pl.lit(cfg.downgrade)).otherwise(pl.lit("good")).alias(cfg.quality_field)
        )
    if cfg.reason_field in schema:
        reason = pl.col(cfg.reason_field)
        exprs.append(
            pl.when(failed).then(reason.fill_null(pl.col(REASONS))).otherwise(reason).alias(cfg.reason_field)
        )
    return exprs
