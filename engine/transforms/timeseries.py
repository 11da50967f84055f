"""Time-series nodes over tag tables: `resample`, `rolling`, `rate_of_change`.

Each works per series (one tag, or the whole input without a tag column, see `ts_common`), in
columnar Polars: `group_by_dynamic` for buckets, `rolling_*_by` for time windows, `shift` over the
series for differences. Output rows are sorted by (tag, time). All three need earlier rows of the
same tag, so they are blocking nodes in the batch executor: a batch boundary must not cut a window.
A streaming run carries per-tag state across micro-batches instead (`stream_state`, `apply_stream`,
`flush_stream`): `ts_resample_stream` for resample, `ts_state` for the others.
`deadband` lives in `ts_deadband`, `quality_check` in `ts_quality`, `power_curve` in `ts_power`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from engine.context import NodeContext
from engine.transforms import ts_resample_stream
from engine.transforms.common import config_error
from engine.transforms.registry import register
from engine.transforms.ts_common import (
    PER_SECONDS,
    Series,
    SeriesConfig,
    SeriesTransform,
    duration_seconds,
    prepare,
    quality_name,
    quality_rank,
    to_polars_duration,
    validated_duration,
)
from engine.transforms.ts_state import StreamsWithHistory, last_rows, per_series

BucketStatistic = Literal["avg", "min", "max", "last", "first", "count", "sum"]
_BUCKET: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "avg": lambda e: e.mean(),
    "min": lambda e: e.min(),
    "max": lambda e: e.max(),
    # first/last: the first and last non-null values in the bucket, like min/max ignore nulls
    "first": lambda e: e.drop_nulls().first(),
    "last": lambda e: e.drop_nulls().last(),
    "count": lambda e: e.count().cast(pl.Int64),
    "sum": lambda e: pl.when(e.count() > 0).then(e.sum()),  # a bucket of nulls has no sum (not 0)
}


class ResampleConfig(SeriesConfig):
    type: Literal["resample"] = "resample"
    interval: str = Field(
        description="Bucket length: `10s`, `1m`, `15m`, `1h`, `1d`, `1mo` or ISO 8601 (`PT1M`)."
    )
    statistic: BucketStatistic | None = Field(
        None, description="One statistic written to value_field (default avg when statistics is not given)."
    )
    statistics: list[BucketStatistic] | None = Field(
        None, min_length=1, description="Several statistics, one column each: `<value_field>_<statistic>`."
    )
    fill: Literal["none", "null", "previous"] = Field(
        "none",
        description="Empty buckets between a tag's first and last: none (absent), null (null values, "
        "count 0) or previous (the previous bucket's values and quality, count 0).",
    )
    quality_field: str = Field(
        "quality", description="Quality text field; a bucket gets its worst quality (skipped when absent)."
    )

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        return validated_duration(value) or value

    @model_validator(mode="after")
    def _one_form(self) -> ResampleConfig:
        if self.statistic is not None and self.statistics is not None:
            raise config_error(type(self).__name__, ("statistics",), "give statistic or statistics, not both")
        return self

    def columns(self) -> dict[str, str]:
        """Output column -> statistic."""
        if self.statistics is not None:
            return {f"{self.value_field}_{s}": s for s in dict.fromkeys(self.statistics)}
        return {self.value_field: self.statistic or "avg"}


@register
class Resample(SeriesTransform):
    """Resample each tag into fixed time buckets (avg, min, max, first, last, count, sum).

    Buckets are closed on the left and labelled by their start ([12:00, 12:01) -> 12:00), aligned to
    the Unix epoch for fixed lengths and to calendar starts for days, months and years. Output rows:
    the tag, the bucket time, the statistics and the worst quality; other fields are dropped.
    """

    type = "resample"
    title = "Resample"
    Config = ResampleConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: ResampleConfig = self.config  # type: ignore[assignment]
        s = prepare(inputs[0], cfg)
        every = to_polars_duration(cfg.interval)
        value = pl.col(cfg.value_field).cast(pl.Float64)
        columns = cfg.columns()
        aggs = [_BUCKET[stat](value).alias(name) for name, stat in columns.items()]
        quality = cfg.quality_field if cfg.quality_field in s.schema else None
        if quality:
            aggs.append(quality_name(quality_rank(quality).max()).alias(quality))
        out = s.frame.group_by_dynamic(
            s.time, every=every, group_by=s.tag, closed="left", label="left", start_by="window"
        ).agg(aggs)
        if cfg.fill != "none":
            out = _fill_empty(out, s.keys, s.time, every, cfg.fill, columns, quality)
        return s.outputs(out.sort([*s.keys, s.time], maintain_order=True))

    # streaming: the open bucket of every tag, as partial aggregates (ts_resample_stream)
    def stream_state(self) -> ts_resample_stream.ResampleState:
        return ts_resample_stream.ResampleState()

    def apply_stream(self, frame: pl.DataFrame, state, ctx: NodeContext) -> dict[str, pl.DataFrame]:
        return ts_resample_stream.apply_stream(self, frame, state, ctx)

    def flush_stream(self, state, ctx: NodeContext) -> dict[str, pl.DataFrame]:
        return ts_resample_stream.flush(self, state, ctx)


def _fill_empty(
    out: pl.LazyFrame,
    keys: list[str],
    time: str,
    every: str,
    fill: str,
    columns: dict[str, str],
    quality: str | None,
) -> pl.LazyFrame:
    span = pl.datetime_range(pl.col(time).min(), pl.col(time).max(), every).alias(time)
    grid = out.group_by(keys).agg(span).explode(time) if keys else out.select(span)
    filled = grid.join(out, on=[*keys, time], how="left", nulls_equal=True).sort([*keys, time])
    counts = [pl.col(name).fill_null(0) for name, stat in columns.items() if stat == "count"]
    if fill == "previous":
        carried = [name for name, stat in columns.items() if stat != "count"] + ([quality] if quality else [])
        forward = [pl.col(name).forward_fill() for name in carried]
        filled = filled.with_columns([f.over(keys) if keys else f for f in forward])
    return filled.with_columns(counts) if counts else filled


# ---- rolling -----------------------------------------------------------------------------------

RollingStatistic = Literal["avg", "min", "max", "sum", "std", "median", "count"]
_BY_TIME = {
    "avg": "rolling_mean_by",
    "min": "rolling_min_by",
    "max": "rolling_max_by",
    "sum": "rolling_sum_by",
    "std": "rolling_std_by",
    "median": "rolling_median_by",
}
_BY_ROWS = {
    "avg": "rolling_mean",
    "min": "rolling_min",
    "max": "rolling_max",
    "sum": "rolling_sum",
    "std": "rolling_std",
    "median": "rolling_median",
}


class RollingConfig(SeriesConfig):
    type: Literal["rolling"] = "rolling"
    window: str | int = Field(
        description="A duration (`5m`, `30s`, `PT1H`: the window (t - window, t]) or a row count "
        "(the last n rows of the tag, this one included)."
    )
    statistic: RollingStatistic = Field("avg", description="What the window computes; std is the sample std.")
    output_field: str | None = Field(None, description="Result column (default `<value_field>_<statistic>`).")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | int) -> str | int:
        if isinstance(value, int):
            if value < 1:
                raise ValueError("a row-count window must be at least 1")
            return value
        return validated_duration(value, fixed=True) or value

    @property
    def output(self) -> str:
        return self.output_field or f"{self.value_field}_{self.statistic}"


@register
class Rolling(StreamsWithHistory, SeriesTransform):
    """A moving statistic per tag over a time window or the last n rows; every row is kept.

    Nulls are skipped: a window of nulls only gives null (count gives 0). Windows at the start of a
    tag are partial (they hold what is there).
    """

    type = "rolling"
    title = "Rolling window"
    Config = RollingConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: RollingConfig = self.config  # type: ignore[assignment]
        s = prepare(inputs[0], cfg)
        value = pl.col(cfg.value_field).cast(pl.Float64)
        stat = cfg.statistic
        present = value.is_not_null().cast(pl.Int64)
        if isinstance(cfg.window, int):
            count = present.rolling_sum(cfg.window, min_samples=1)
            expr = count if stat == "count" else getattr(value, _BY_ROWS[stat])(cfg.window, min_samples=1)
        else:
            window = to_polars_duration(cfg.window, fixed=True)
            count = present.rolling_sum_by(s.time, window)
            expr = count if stat == "count" else getattr(value, _BY_TIME[stat])(s.time, window)
        if stat == "sum":  # a window of nulls has no sum (not 0), as in resample
            expr = pl.when(count > 0).then(expr)
        return s.outputs(s.frame.with_columns(s.over(expr).alias(cfg.output)))

    def stream_tail(self, combined: pl.DataFrame, result: pl.DataFrame, s: Series) -> pl.Expr:
        window = self.config.window  # type: ignore[attr-defined]
        if isinstance(window, int):
            return last_rows(window - 1, s.keys)
        # a later row's window (t - window, t] reaches back to rows after (newest - window)
        reach = pl.duration(microseconds=int(duration_seconds(window) * 1e6))
        return pl.col(s.time) > per_series(pl.col(s.time).max(), s.keys) - reach


# ---- rate of change ----------------------------------------------------------------------------


class RateOfChangeConfig(SeriesConfig):
    type: Literal["rate_of_change"] = "rate_of_change"
    per: Literal["second", "minute", "hour"] = Field("second", description="Time unit of the rate.")
    output_field: str | None = Field(None, description="Result column (default `<value_field>_rate`).")

    @property
    def output(self) -> str:
        return self.output_field or f"{self.value_field}_rate"


@register
class RateOfChange(StreamsWithHistory, SeriesTransform):  # streaming: the previous row per tag
    """(value - previous value) / time between them, per tag, in units per second/minute/hour.

    The first row of a tag has no previous row and gives null, as do rows where either value is null
    or the two timestamps are equal (no time passed, so no rate).
    """

    type = "rate_of_change"
    title = "Rate of change"
    Config = RateOfChangeConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: RateOfChangeConfig = self.config  # type: ignore[assignment]
        s = prepare(inputs[0], cfg)
        rate = rate_expr(pl.col(cfg.value_field), pl.col(s.time), s) * PER_SECONDS[cfg.per]
        return s.outputs(s.frame.with_columns(rate.alias(cfg.output)))


def rate_expr(value: pl.Expr, time: pl.Expr, s) -> pl.Expr:
    """Change per second since the previous row of the same series (null where undefined)."""
    value = value.cast(pl.Float64)
    change = s.over(value - value.shift(1))
    seconds = s.over(time.diff().dt.total_microseconds()) / 1e6
    return pl.when(seconds > 0).then(change / seconds)
