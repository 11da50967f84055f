"""Time-series transformations: unit cases per node, config errors, and properties against the
per-record reference in ts_reference.py."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.tags import TAG_SCHEMA
from engine.transforms import registry
from engine.transforms.base import REJECT_REASON
from engine.transforms.catalog import build
from engine.transforms.ts_common import duration_seconds, to_polars_duration
from engine.transforms.ts_deadband import deadband_keep
from protocols.windfarm import POWER_CURVE, power_kw
from tests.engine import ts_reference as ref

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS_TYPES = ["resample", "rolling", "rate_of_change", "deadband", "quality_check", "power_curve"]
MINIMAL = {
    "resample": {"interval": "1m"},
    "rolling": {"window": "5m"},
    "rate_of_change": {},
    "deadband": {"deadband": 0.5},
    "quality_check": {"min": 0},
    "power_curve": {"curve": [[3, 0], [12, 2500]]},
}


def at(*seconds: float) -> list[datetime]:
    return [T0 + timedelta(seconds=s) for s in seconds]


def tags(rows: list[tuple]) -> pl.DataFrame:
    """(tag, seconds, value, quality) tuples -> a tag table."""
    return pl.DataFrame(
        {
            "timestamp": at(*[r[1] for r in rows]),
            "tag": [r[0] for r in rows],
            "value": [r[2] for r in rows],
            "quality": [r[3] if len(r) > 3 else "good" for r in rows],
        },
        schema_overrides={"value": pl.Float64},
    )


def run(step: dict, frame: pl.DataFrame, ctx: NodeContext | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    outputs = build(step).apply([frame.lazy()], ctx or NodeContext(RunContext(), "n"))
    return outputs["out"].collect(), outputs["rejected"].collect()


# ---- catalog -------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", TS_TYPES)
def test_registered_with_schema_descriptions_and_strict_keys(type_name):
    node = build({"type": type_name, **MINIMAL[type_name]}, "n1")
    assert node.type == type_name and node.output_ports() == ["out", "rejected"]
    schema = registry.get(type_name).describe()["config_schema"]
    assert all(prop.get("description") for name, prop in schema["properties"].items() if name != "type")
    with pytest.raises(ValidationError) as err:
        build({"type": type_name, **MINIMAL[type_name], "surprise": 1})
    assert ("surprise",) in [e["loc"] for e in err.value.errors()]


@pytest.mark.parametrize(
    ("step", "streaming"),
    [
        ({"type": "resample", "interval": "1m"}, False),
        ({"type": "rolling", "window": 3}, False),
        ({"type": "rate_of_change"}, False),
        ({"type": "deadband", "percent": 1}, False),
        ({"type": "quality_check", "min": 0, "max": 1}, True),
        ({"type": "quality_check", "min": 0, "max_gap": "1m"}, False),
        ({"type": "power_curve", "curve": [[3, 0], [12, 2500]]}, True),
        ({"type": "power_curve", "curve": [[3, 0], [12, 2500]], "wind_tag": "w", "power_tag": "p"}, False),
    ],
)
def test_only_row_local_nodes_stream(step, streaming):
    assert build(step).streaming is streaming


@pytest.mark.parametrize("type_name", TS_TYPES)
def test_plans_on_an_empty_tag_table(type_name):
    """The spec validator applies every node to empty frames of the source schema."""
    step = {"type": type_name, **MINIMAL[type_name]}
    if type_name == "power_curve":
        step |= {"wind_tag": "wind_speed", "power_tag": "power"}
    out, rejected = run(step, pl.DataFrame(schema=TAG_SCHEMA))
    assert out.height == 0 and rejected.height == 0


@pytest.mark.parametrize(
    ("step", "loc", "message"),
    [
        ({"type": "resample", "interval": "soon"}, ("interval",), "not a positive duration"),
        ({"type": "resample", "interval": "0s"}, ("interval",), "not a positive duration"),
        (
            {"type": "resample", "interval": "1m", "statistic": "avg", "statistics": ["min"]},
            ("statistics",),
            "not both",
        ),
        ({"type": "rolling", "window": "1mo"}, ("window",), "fixed length"),
        ({"type": "rolling", "window": 0}, ("window",), "at least 1"),
        ({"type": "deadband"}, ("deadband",), "exactly one"),
        ({"type": "deadband", "deadband": 1, "span": 10}, ("span",), "only applies with percent"),
        ({"type": "quality_check"}, ("stale_after",), "at least one check"),
        ({"type": "quality_check", "min": 5, "max": 1}, ("min",), "above max"),
        ({"type": "quality_check", "now": "yesterday", "min": 0}, ("now",), "ISO 8601"),
        ({"type": "power_curve", "curve": [[3, 0], [3, 10]]}, ("curve", 1), "increase strictly"),
        ({"type": "power_curve", "curve": [[3, 0], [4, 10]], "wind_tag": "w"}, ("wind_tag",), "both"),
    ],
)
def test_config_errors_name_the_field(step, loc, message):
    with pytest.raises(ValidationError) as err:
        build(step)
    error = err.value.errors()[0]
    assert error["loc"] == loc and message in error["msg"]


def test_data_errors_name_the_parameter():
    frame = tags([("a", 0, 1.0)])
    with pytest.raises(TransformError, match="value_field 'value' must be numeric") as err:
        run({"type": "rolling", "window": 2}, frame.with_columns(pl.col("value").cast(pl.String)))
    assert err.value.param == "value_field"
    with pytest.raises(TransformError) as err:
        run({"type": "rolling", "window": 2, "time_field": "when"}, frame)
    assert err.value.param == "time_field"
    with pytest.raises(TransformError) as err:
        run({"type": "rolling", "window": 2, "tag_field": "device"}, frame)  # explicit: must exist
    assert err.value.param == "tag_field"


def test_durations_in_both_languages():
    assert to_polars_duration("PT1M30S") == "1m30s" and to_polars_duration("10s") == "10s"
    assert duration_seconds("PT1H") == 3600 and duration_seconds("1m30s") == 90
    assert to_polars_duration("P1M") == "1mo"  # ISO months are calendar months


def test_rows_without_a_timestamp_are_rejected_with_a_reason():
    frame = pl.DataFrame(
        {"timestamp": ["2024-01-01T00:00:00Z", "not a time", None], "tag": "a", "value": [1.0, 2.0, 3.0]}
    )
    out, rejected = run({"type": "rate_of_change"}, frame)
    assert out["value"].to_list() == [1.0] and out.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert rejected["value"].to_list() == [2.0, 3.0]
    assert rejected[REJECT_REASON][0] == "timestamp is missing or not an ISO 8601 timestamp"


# ---- resample ------------------------------------------------------------------------------------


def test_resample_statistics_and_worst_quality_per_bucket():
    frame = tags(
        [("b", 70, 9.0), ("a", 0, 1.0), ("a", 30, 3.0, "uncertain"), ("a", 61, 5.0), ("a", 65, None, "bad")]
    )
    out, _ = run(
        {
            "type": "resample",
            "interval": "1m",
            "statistics": ["avg", "min", "max", "first", "last", "count", "sum"],
        },
        frame,
    )
    assert out.columns == [
        "tag",
        "timestamp",
        *[f"value_{s}" for s in ("avg", "min", "max", "first", "last", "count", "sum")],
        "quality",
    ]
    assert out.rows() == [
        ("a", T0, 2.0, 1.0, 3.0, 1.0, 3.0, 2, 4.0, "uncertain"),
        ("a", T0 + timedelta(minutes=1), 5.0, 5.0, 5.0, 5.0, 5.0, 1, 5.0, "bad"),
        ("b", T0 + timedelta(minutes=1), 9.0, 9.0, 9.0, 9.0, 9.0, 1, 9.0, "good"),
    ]


def test_resample_fills_empty_buckets_with_null_or_previous():
    frame = tags([("a", 0, 1.0), ("a", 35, 4.0, "bad"), ("b", 5, 7.0)])
    step = {"type": "resample", "interval": "PT10S", "statistics": ["avg", "count"]}
    nulls, _ = run({**step, "fill": "null"}, frame)
    assert nulls.filter(pl.col("tag") == "a")["value_avg"].to_list() == [1.0, None, None, 4.0]
    assert nulls.filter(pl.col("tag") == "a")["value_count"].to_list() == [1, 0, 0, 1]
    assert nulls.filter(pl.col("tag") == "b").height == 1  # a tag's grid spans its own data only
    previous, _ = run({**step, "fill": "previous"}, frame)
    a = previous.filter(pl.col("tag") == "a")
    assert a["value_avg"].to_list() == [1.0, 1.0, 1.0, 4.0] and a["value_count"].to_list() == [1, 0, 0, 1]
    assert a["quality"].to_list() == ["good", "good", "good", "bad"]


def test_resample_one_statistic_on_a_wide_table_without_tags():
    frame = pl.DataFrame(
        {"time": ["2024-01-01T00:00:01Z", "2024-01-01T00:00:02", "2024-01-01T00:01:00Z"], "kw": [1, 3, 5]}
    )
    out, _ = run(
        {"type": "resample", "interval": "1m", "statistic": "max", "time_field": "time", "value_field": "kw"},
        frame,
    )
    assert out.rows() == [(T0, 3.0), (T0 + timedelta(minutes=1), 5.0)]


# ---- rolling and rate of change ------------------------------------------------------------------


def test_rolling_time_window_is_open_on_the_left():
    frame = tags([("a", 0, 1.0), ("a", 5, 2.0), ("a", 10, 4.0), ("b", 0, 100.0)])
    out, _ = run({"type": "rolling", "window": "10s", "statistic": "sum", "output_field": "s10"}, frame)
    assert out["s10"].to_list() == [1.0, 3.0, 6.0, 100.0]  # at 10 s the row at 0 s is out: (0, 10]
    counted, _ = run(
        {"type": "rolling", "window": 2, "statistic": "count"},
        frame.with_columns(value=pl.when(pl.col("value") != 2).then(pl.col("value"))),
    )
    assert counted["value_count"].to_list() == [1, 1, 1, 1]


def test_rate_of_change_per_minute():
    frame = tags([("a", 0, 10.0), ("a", 30, 11.0), ("a", 30, 12.0), ("a", 90, 9.0), ("b", 0, 1.0)])
    out, _ = run({"type": "rate_of_change", "per": "minute"}, frame)
    assert out["value_rate"].to_list() == [None, 2.0, None, -3.0, None]


# ---- deadband ------------------------------------------------------------------------------------


def test_deadband_compares_with_the_last_kept_value():
    # a slow drift: each step is within the band, but the drift from the last kept value is not
    frame = tags([("a", i, 10.0 + 0.3 * i) for i in range(6)])
    out, _ = run({"type": "deadband", "deadband": 0.5}, frame)
    assert out["value"].round(6).to_list() == [10.0, 10.6, 11.2]


def test_deadband_keeps_quality_changes_gaps_and_first_values():
    frame = tags(
        [
            ("a", 0, 5.0),
            ("a", 1, 5.1),
            ("a", 2, 5.1, "bad"),
            ("a", 3, None, "bad"),
            ("a", 4, None, "bad"),
            ("a", 5, 5.2, "bad"),
            ("b", 0, 5.0),
        ]
    )
    out, _ = run({"type": "deadband", "percent": 10}, frame)
    assert out.select("tag", "value", "quality").rows() == [
        ("a", 5.0, "good"),
        ("a", 5.1, "bad"),
        ("a", None, "bad"),
        ("a", 5.2, "bad"),
        ("b", 5.0, "good"),
    ]


def test_deadband_percent_of_span():
    frame = tags([("a", i, v) for i, v in enumerate([0.0, 0.9, 1.1, 1.5, 2.2])])
    out, _ = run({"type": "deadband", "percent": 1, "span": 100}, frame)  # band 1.0
    assert out["value"].to_list() == [0.0, 1.1, 2.2]


def test_deadband_keeps_every_move_beyond_the_band():
    values = [float(i % 100) for i in range(200_000)]
    keep = deadband_keep(values, [False] * len(values), 0.5, None, None)
    assert sum(keep) == len(values)  # every step moves by 1


# ---- quality check -------------------------------------------------------------------------------


def test_quality_check_flags_each_check_and_joins_reasons():
    frame = tags(
        [
            ("a", 0, 1.0),
            ("a", 10, 1.0),
            ("a", 20, 1.0),
            ("a", 100, 50.0),
            ("a", 101, 200.0),
            ("b", 0, None, "bad"),
        ]
    )
    step = {
        "type": "quality_check",
        "stale_after": "1m",
        "flatline_after": "20s",
        "min": 0,
        "max": 100,
        "rate_limit": 10,
        "max_gap": "30s",
        "now": "2024-01-01T00:02:00Z",
    }
    out, _ = run(step, frame)
    assert out.select("qc_stale", "qc_flatline", "qc_range", "qc_rate", "qc_gap").rows() == [
        (False, False, False, False, False),
        (False, False, False, False, False),
        (True, True, False, False, False),  # next value 80 s later; unchanged for 20 s
        (False, False, False, False, True),  # (50-1)/80 s = 0.6/s is fine; 80 s gap
        (False, False, True, True, False),  # 150/s; the last row of `a`: now is 19 s later
        (True, False, False, False, False),  # b's only row, 120 s before now
    ]
    assert out["qc_reasons"].to_list() == [None, None, "stale,flatline", "gap", "range,rate", "stale"]


def test_quality_check_flatline_by_count_and_downgrade():
    frame = tags(
        [
            ("a", i, v, q)
            for i, (v, q) in enumerate([(2.0, "good"), (2.0, "good"), (2.0, "bad"), (3.0, "good")])
        ]
    )
    frame = frame.with_columns(reason=pl.Series([None, None, "comm_lost", None], dtype=pl.String))
    out, _ = run({"type": "quality_check", "flatline_after": 2, "downgrade": "uncertain"}, frame)
    assert out["qc_flatline"].to_list() == [False, True, True, False]
    assert out["quality"].to_list() == ["good", "uncertain", "bad", "good"]  # never better than before
    assert out["reason"].to_list() == [None, "flatline", "comm_lost", None]


def test_quality_check_stale_defaults_to_the_run_start():
    frame = tags([("a", 0, 1.0)])
    ctx = NodeContext(RunContext(started_at=T0 + timedelta(minutes=10)), "n")
    out, _ = run({"type": "quality_check", "stale_after": "5m"}, frame, ctx)
    assert out["qc_stale"].to_list() == [True] and out.columns[-2:] == ["qc_stale", "qc_reasons"]


# ---- power curve ---------------------------------------------------------------------------------


def test_power_curve_wide_matches_the_wind_farm_model():
    winds = [0.0, 2.9, 3.0, 5.5, 12.0, 20.0, 25.0, 30.0, None]
    frame = pl.DataFrame({"wind_speed": winds, "power": [0.0, 0, 0, 100, 2400, 2500, 2500, 0, 7]})
    out, _ = run({"type": "power_curve", "curve": POWER_CURVE}, frame)
    for wind, expected in zip(winds, out["expected_power"].to_list(), strict=True):
        if wind is None:
            assert expected is None
        elif wind in (0.0, 2.9, 3.0, 12.0, 20.0, 25.0, 30.0):
            assert expected == pytest.approx(power_kw(wind), abs=0.1)  # the curve's own points
    assert out["expected_power"][3] == pytest.approx((54.9 + 165.2) / 2 - 0.0, abs=60)  # between 5 and 6 m/s
    assert out["deviation"][4] == -100.0 and out["deviation_pct"][4] == pytest.approx(-4.0)
    assert out["deviation_pct"][7] is None  # expected 0 above cut-out: no percentage


def test_power_curve_pivots_long_tags_per_turbine():
    frame = tags(
        [
            ("WTG01.wind_speed", 0, 12.0),
            ("WTG01.power", 0, 2000.0),
            ("WTG01.rpm", 0, 16.0),
            ("WTG02.wind_speed", 0, 2.0),
            ("WTG02.power", 0, 5.0),
            ("WTG01.wind_speed", 1, 13.0),
        ]
    )
    step = {"type": "power_curve", "curve": POWER_CURVE, "wind_tag": "wind_speed", "power_tag": "power"}
    out, _ = run(step, frame)
    assert out.select("turbine", "wind_speed", "power", "expected_power", "deviation").rows() == [
        ("WTG01", 12.0, 2000.0, 2500.0, -500.0),
        ("WTG01", 13.0, None, 2500.0, None),
        ("WTG02", 2.0, 5.0, 0.0, 5.0),
    ]


# ---- properties against the per-record reference -------------------------------------------------

SECOND = 1_000_000
rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "tag": st.sampled_from(["a", "b", "c"]),
            "t": st.integers(0, 300).map(lambda s: s * SECOND // 2),
            "value": st.one_of(st.none(), st.integers(-50, 50).map(float)),
            "quality": st.sampled_from(["good", "good", "good", "bad"]),
        }
    ),
    max_size=40,
)
unique_times = rows_strategy.map(lambda rows: list({(r["tag"], r["t"]): r for r in rows}.values()))
settings_ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frame_of(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": pl.Series([r["t"] for r in rows], dtype=pl.Int64),
            "tag": [r["tag"] for r in rows],
            "value": pl.Series([r["value"] for r in rows], dtype=pl.Float64),
            "quality": [r["quality"] for r in rows],
        }
    ).with_columns(pl.from_epoch("timestamp", "us").dt.replace_time_zone("UTC"))


def engine_rows(out: pl.DataFrame, columns: list[str]) -> list[dict]:
    return out.with_columns(t=pl.col("timestamp").dt.epoch("us")).select("tag", "t", *columns).to_dicts()


def same(a, b) -> bool:
    if a is None or b is None or isinstance(a, str):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def assert_rows_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys() and all(
            same(g[k], w[k]) if k not in ("tag", "t") else g[k] == w[k] for k in g
        ), (g, w)


@settings_
@given(
    rows_strategy,
    st.sampled_from([1, 10, 60]),
    st.lists(
        st.sampled_from(["avg", "min", "max", "first", "last", "count", "sum"]), min_size=1, unique=True
    ),
)
def test_resample_matches_reference(rows, seconds, names):
    out, _ = run({"type": "resample", "interval": f"{seconds}s", "statistics": names}, frame_of(rows))
    got = [
        {k.removeprefix("value_"): v for k, v in r.items()}
        for r in engine_rows(out, [f"value_{n}" for n in names])
    ]
    assert_rows_equal(got, ref.resample(rows, seconds * SECOND, names))


@settings_
@given(
    unique_times,
    st.one_of(st.integers(1, 5), st.sampled_from(["1s", "10s", "1m"])),
    st.sampled_from(["avg", "min", "max", "sum", "std", "median", "count"]),
)
def test_rolling_matches_reference(rows, window, name):
    out, _ = run(
        {"type": "rolling", "window": window, "statistic": name, "output_field": "result"}, frame_of(rows)
    )
    if isinstance(window, int):
        want = ref.rolling_rows(rows, window, name)
    else:
        want = ref.rolling_time(rows, int(duration_seconds(window) * SECOND), name)
    assert_rows_equal(engine_rows(out, ["result"]), want)


@settings_
@given(rows_strategy, st.sampled_from(["second", "minute", "hour"]))
def test_rate_of_change_matches_reference(rows, per):
    out, _ = run({"type": "rate_of_change", "per": per, "output_field": "result"}, frame_of(rows))
    want = ref.rate_of_change(rows, {"second": 1, "minute": 60, "hour": 3600}[per])
    assert_rows_equal(engine_rows(out, ["result"]), want)


@settings_
@given(
    rows_strategy,
    st.sampled_from([{"deadband": 0}, {"deadband": 3}, {"percent": 20}, {"percent": 5, "span": 100}]),
)
def test_deadband_matches_reference(rows, band):
    out, _ = run({"type": "deadband", **band}, frame_of(rows))
    want = ref.deadband(rows, band.get("deadband"), band.get("percent"), band.get("span"))
    got = engine_rows(out, ["value", "quality"])
    assert_rows_equal(got, [{k: r[k] for k in ("tag", "t", "value", "quality")} for r in want])
