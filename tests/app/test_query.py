"""`aggregator query`: trends and last values as a table or JSON; bad input is one line, exit 2."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

import pytest

from app.query import add_query_parser, cmd_query, parse_time
from engine.errors import UsageError
from tests.tag_history import seed_two_tags


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aggregator")
    add_query_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["query", *argv])


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cmd_query(parse(*[str(a) for a in argv]))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data_dir(tmp_path):
    return seed_two_tags(tmp_path, source="test")


def test_trend_as_json(capsys, data_dir):
    code, out, err = run(
        capsys, "t1.*", "--start", "2024-03-01T12:00", "--end", "2024-03-01T12:02Z", "--stat", "avg,max", "--json",
        "--data-dir", data_dir,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out) == [
        {"tag": "t1.power", "bucket": "2024-03-01T12:00:00Z", "avg": 25.0, "max": 50.0, "bad_count": 0},
        {"tag": "t1.power", "bucket": "2024-03-01T12:01:00Z", "avg": 85.0, "max": 110.0, "bad_count": 0},
    ]


def test_trend_as_a_table(capsys, data_dir):
    code, out, _ = run(capsys, "*.power", "--bucket", "5m", "--data-dir", data_dir)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["tag", "bucket", "avg", "min", "max", "last", "count", "bad_count"]
    assert lines[1].split() == [
        "t1.power",
        "2024-03-01",
        "12:00:00.000",
        "85.0",
        "0.0",
        "170.0",
        "170.0",
        "18",
        "0",
    ]
    assert lines[2].split() == [
        "t2.power",
        "2024-03-01",
        "12:00:00.000",
        "170.0",
        "0.0",
        "340.0",
        "340.0",
        "18",
        "1",
    ]


def test_last_values(capsys, data_dir):
    code, out, _ = run(capsys, "t2.power", "t1.power", "--last", "--json", "--data-dir", data_dir)
    rows = json.loads(out)
    assert code == 0
    assert [(r["tag"], r["value"], r["quality"]) for r in rows] == [
        ("t1.power", 170.0, "good"),
        ("t2.power", None, "bad"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "yesterday"], "error: --start 'yesterday': give an ISO time"),
        (["--end=-3x"], "error: --end '3x': give a positive number with a unit"),
        (["--bucket", "fortnight"], "error: --bucket 'fortnight'"),
        (["--stat", "avg,mode"], "error: --stat 'avg,mode': allowed statistics are"),
        (["--start=-1h", "--end", "now-2h"], "error: --start ("),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, data_dir, argv, message):
    code, out, err = run(capsys, "t1.power", *argv, "--data-dir", data_dir)
    assert code == 2
    assert out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_a_bad_pattern_is_exit_2(capsys, data_dir):
    code, _, err = run(capsys, "re:(", "--data-dir", data_dir)
    assert code == 2 and "bad regular expression" in err


def test_no_historian_yet(capsys, tmp_path):
    code, _, err = run(capsys, "x", "--data-dir", tmp_path / "empty")
    assert code == 1 and "no historian yet" in err
    assert not (tmp_path / "empty").exists()


def test_nothing_matched_says_so(capsys, data_dir):
    code, out, _ = run(capsys, "nothing.*", "--data-dir", data_dir)
    assert (code, out) == (0, "(no values)\n")


def test_relative_and_absolute_times():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_time("now", now, "t") == now
    assert parse_time("-90m", now, "t") == now - timedelta(minutes=90)
    assert parse_time("now-1d", now, "t") == now - timedelta(days=1)
    assert parse_time("2024-05-01T10:00+02:00", now, "t") == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    with pytest.raises(UsageError):
        parse_time("12:00", now, "t")
