"""`power_curve`: expected power of a wind turbine from its nominal curve, and the deviation from it.

Wide input (one row per turbine and time, with wind and power columns) is used as it is. Long tag
input is pivoted first when `wind_tag` and `power_tag` are given: a tag `WTG01.wind_speed` is split at
its last `separator` into the turbine (`WTG01`, written to `turbine_field`) and the measurement
(`wind_speed`); rows of the same turbine and timestamp become one row with both values. Tags without
the separator belong to no turbine (null), e.g. a single-turbine table with tags `wind` and `power`.

The curve is a table of (wind m/s, power) points with strictly increasing wind. Between points the
expected power is interpolated linearly; below the first and above the last point it is 0 (the
turbine is not running: below cut-in or cut out in a storm).
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import REJECT_REASON
from engine.transforms.common import config_error, is_numeric
from engine.transforms.registry import register
from engine.transforms.ts_common import SeriesConfig, SeriesTransform, prepare

EXPECTED = "expected_power"
DEVIATION = "deviation"
DEVIATION_PCT = "deviation_pct"


class PowerCurveConfig(SeriesConfig):
    type: Literal["power_curve"] = "power_curve"
    curve: list[tuple[float, float]] = Field(
        min_length=2, description="Nominal curve as [[wind, power], ...] with strictly increasing wind."
    )
    wind_field: str = Field(
        "wind_speed", description="Wind speed column (wide input, or the pivoted column)."
    )
    power_field: str = Field(
        "power", description="Measured power column (wide input, or the pivoted column)."
    )
    wind_tag: str | None = Field(
        None,
        description="Long input: the measurement name of wind tags (`wind_speed` in `WTG01.wind_speed`).",
    )
    power_tag: str | None = Field(None, description="Long input: the measurement name of power tags.")
    separator: str = Field(
        ".", min_length=1, description="Long input: separates turbine and measurement in a tag."
    )
    turbine_field: str = Field("turbine", description="Long input: column written with the turbine name.")

    @model_validator(mode="after")
    def _check(self) -> PowerCurveConfig:
        name = type(self).__name__
        for i in range(1, len(self.curve)):
            if self.curve[i][0] <= self.curve[i - 1][0]:
                raise config_error(
                    name, ("curve", i), "wind speeds in the curve must increase strictly", list(self.curve[i])
                )
        if (self.wind_tag is None) != (self.power_tag is None):
            raise config_error(name, ("wind_tag",), "long input needs both wind_tag and power_tag")
        return self

    @property
    def long_input(self) -> bool:
        return self.wind_tag is not None


@register
class PowerCurve(SeriesTransform):
    """Expected power from a turbine power curve (linear interpolation), deviation and deviation %."""

    type = "power_curve"
    title = "Power curve"
    category = "calculate"
    Config = PowerCurveConfig

    @property
    def streaming(self) -> bool:
        # the long form pairs rows of one timestamp, which a batch boundary could split
        return not self.config.long_input  # type: ignore[attr-defined]

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: PowerCurveConfig = self.config  # type: ignore[assignment]
        if cfg.long_input:
            s = prepare(inputs[0], cfg)
            if s.tag is None:
                raise TransformError(
                    f"wind_tag/power_tag need a tag column, but '{cfg.tag_field}' is missing",
                    param="tag_field",
                )
            wide, rejected = _pivot(s.frame, s.time, cfg), s.rejected
        else:
            wide = inputs[0]
            rejected = wide.clear().with_columns(pl.lit(None, pl.String).alias(REJECT_REASON))
        schema = wide.collect_schema()
        for param in ("wind_field", "power_field"):
            column = getattr(cfg, param)
            if column not in schema or not is_numeric(schema[column]):
                found = f"it is {schema[column]}" if column in schema else "it is missing"
                raise TransformError(f"{param} '{column}' must be a numeric column, but {found}", param=param)
        expected = expected_power(pl.col(cfg.wind_field), cfg.curve)
        deviation = pl.col(cfg.power_field).cast(pl.Float64) - pl.col(EXPECTED)
        out = wide.with_columns(expected.alias(EXPECTED)).with_columns(deviation.alias(DEVIATION))
        pct = pl.when(pl.col(EXPECTED) != 0).then(pl.col(DEVIATION) / pl.col(EXPECTED) * 100)
        return {"out": out.with_columns(pct.alias(DEVIATION_PCT)), "rejected": rejected}


def expected_power(wind: pl.Expr, curve: list[tuple[float, float]]) -> pl.Expr:
    """Linear interpolation in `curve`, 0 outside it, null where wind is null (numpy, vectorised)."""
    xs = np.array([w for w, _ in curve], dtype=np.float64)
    ys = np.array([p for _, p in curve], dtype=np.float64)

    def interpolate(speeds: pl.Series) -> pl.Series:
        values = speeds.cast(pl.Float64).to_numpy()  # nulls become NaN, and np.interp keeps NaN
        result = np.interp(values, xs, ys, left=0.0, right=0.0)
        return pl.Series(speeds.name, result).fill_nan(None)

    return wind.map_batches(interpolate, return_dtype=pl.Float64, is_elementwise=True)


def _pivot(frame: pl.LazyFrame, time: str, cfg: PowerCurveConfig) -> pl.LazyFrame:
    tag = pl.col(cfg.tag_field or "tag").cast(pl.String)
    parts = rf"^(.*){re.escape(cfg.separator)}(.*)$"
    kind = pl.coalesce(tag.str.extract(parts, 2), tag)
    value = pl.col(cfg.value_field).cast(pl.Float64)
    return (
        frame.with_columns(kind.alias("__kind"), tag.str.extract(parts, 1).alias(cfg.turbine_field))
        .filter(pl.col("__kind").is_in([cfg.wind_tag, cfg.power_tag]))
        .group_by([cfg.turbine_field, time], maintain_order=True)
        .agg(
            value.filter(pl.col("__kind") == cfg.wind_tag).last().alias(cfg.wind_field),
            value.filter(pl.col("__kind") == cfg.power_tag).last().alias(cfg.power_field),
        )
        .sort([cfg.turbine_field, time], nulls_last=True, maintain_order=True)
    )
