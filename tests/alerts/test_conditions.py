"""The condition grammar: text and dict forms, one-line errors with the JSON path, and the
canonical text of every condition parsing back to the same condition (hypothesis)."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.alerts import conditions as C
from engine.errors import SpecError
from engine.spec.validate import validate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pipeline failed", C.PipelineFailed()),
        ("failed", C.PipelineFailed()),
        ("Pipeline Warning", C.PipelineWarning()),
        ("source lost > 30s", C.SourceLost(30.0)),
        ("source_lost plc1 > 2 min", C.SourceLost(120.0, "plc1")),
        ("tag Boiler.T > 80 for 10s", C.TagThreshold("Boiler.T", ">", value=80.0, for_s=10.0)),
        ("tag Line1/* <= -5.5", C.TagThreshold("Line1/*", "<=", value=-5.5)),
        ("tag p outside [10, 90] for 500ms", C.TagThreshold("p", "outside", low=10.0, high=90.0, for_s=0.5)),
        ("outbox age > 5 min", C.OutboxAge(300.0)),
        ("outbox fill > 80%", C.OutboxFill(80.0)),
        ("drops > 0", C.Drops(0)),
        (
            {"type": "tag", "tag": "x", "op": "outside", "low": 1, "high": 2, "for_s": 3},
            C.TagThreshold("x", "outside", low=1.0, high=2.0, for_s=3.0),
        ),
        ({"type": "source_lost", "seconds": 5, "source": "opc"}, C.SourceLost(5.0, "opc")),
        ({"type": "drops", "more_than": 10, "clear_after_s": 5}, C.Drops(10, 5.0)),
    ],
)
def test_forms(text, expected):
    assert C.parse_condition(text) == expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("tag x blah 3", "unknown condition 'tag x blah 3' (allowed: 'pipeline failed'"),
        (
            {"type": "tag", "tag": "x", "op": "!=", "value": 1},
            "'op' '!=' is not allowed (allowed: >, <, >=, <=, outside)",
        ),
        ({"type": "tag", "tag": "x", "op": "outside", "low": 5, "high": 1}, "'low' (5) is above 'high' (1)"),
        ({"type": "outbox_fill"}, "'percent' is missing"),
        ({"type": "outbox_age", "seconds": 1, "x": 2}, "'x' is not a field of a outbox_age condition"),
        ({"type": "nope"}, "unknown condition type 'nope'"),
    ],
)
def test_bad_condition_is_one_line_with_its_json_path(condition, message):
    doc = {
        "name": "p",
        "source": {"name": "s", "connector_type": "file", "config": {"path": "x.csv"}},
        "error_handling": {
            "alerts": [{"condition": "failed"}, {"condition": "drops > 0"}, {"condition": condition}]
        },
    }
    with pytest.raises(SpecError) as exc:
        validate(doc, check_schemas=False)
    [issue] = [i for i in exc.value.issues if "alerts" in i.path]
    assert issue.path == "error_handling.alerts[2].condition"
    assert message in issue.message and "\n" not in issue.message


def test_notify_names_channels():
    doc = {
        "name": "p",
        "source": {"name": "s", "connector_type": "file", "config": {"path": "x.csv"}},
        "error_handling": {"alerts": [{"condition": "failed", "notify": ["sms"]}]},
    }
    with pytest.raises(SpecError) as exc:
        validate(doc, check_schemas=False)
    assert any(i.path.startswith("error_handling.alerts[0].notify") for i in exc.value.issues)


names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.*/]{0,12}", fullmatch=True)
numbers = st.integers(-10_000, 10_000).map(lambda n: n / 4)
durations = st.integers(0, 100_000).map(lambda n: n / 8)
conditions = st.one_of(
    st.just(C.PipelineFailed()),
    st.just(C.PipelineWarning()),
    st.builds(C.SourceLost, durations, st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True))),
    st.builds(lambda t, op, v, d: C.TagThreshold(t, op, value=v, for_s=d), names, st.sampled_from(C.OPS), numbers, durations),
    st.builds(
        lambda t, a, b, d: C.TagThreshold(t, "outside", low=min(a, b), high=max(a, b), for_s=d),
        names, numbers, numbers, durations,
    ),
    st.builds(C.OutboxAge, durations),
    st.builds(C.OutboxFill, durations),
    st.builds(C.Drops, st.integers(0, 1000)),
)  # fmt: skip


@given(conditions)
def test_canonical_text_round_trips(condition):
    assert C.parse_condition(C.describe(condition)) == condition


def test_tag_states_is_the_end_state_per_tag():
    rule = C.TagThreshold("t*", ">", value=10.0)
    batch = pl.DataFrame(
        {
            "tag": ["t1", "t1", "t1", "t2", "t2", "x"],
            "timestamp": pl.Series([1, 2, 3, 1, 2, 1], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "value": [11.0, 5.0, 12.0, 20.0, 30.0, 99.0],
        }
    )
    got = {r["tag"]: r for r in C.tag_states(batch, rule).iter_rows(named=True)}
    assert set(got) == {"t1", "t2"}
    assert (got["t1"]["beyond"], got["t1"]["run_start_us"], got["t1"]["whole_run"]) == (True, 3, False)
    assert (got["t2"]["beyond"], got["t2"]["run_start_us"], got["t2"]["whole_run"]) == (True, 1, True)
    assert got["t2"]["last_value"] == 30.0
