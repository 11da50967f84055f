"""Odd files (issue 9, C14): old-Mac CSV line endings, one giant line, an xlsx with a broken cell
reference, and XML names with dots. Each is read right or refused with one line naming the place."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.connectors.file import FileConnector
from engine.context import RunContext
from engine.errors import DataError

GOLDEN = Path(__file__).parents[1] / "golden" / "formats"
BROKEN_XLSX = GOLDEN / "odd_files" / "broken_cell_ref.xlsx"


def read_all(tmp_path: Path, **config) -> pl.DataFrame:
    source = FileConnector.make_source(
        FileConnector.SourceConfig.model_validate(config), RunContext(base_dir=tmp_path), "input"
    )
    batches = list(source.read(batch_rows=2))
    return pl.concat(batches, how="diagonal_relaxed") if batches else pl.DataFrame()


# ---- CSV ----------------------------------------------------------------------------------------
def test_cr_only_line_endings_are_read(tmp_path):
    (tmp_path / "mac.csv").write_bytes(b"id,product,price\r1,bolt,0.5\r2,nut,0.25\r3,gear,12.0\r")
    frame = read_all(tmp_path, path="mac.csv")
    assert frame.to_dicts() == [
        {"id": 1, "product": "bolt", "price": 0.5},
        {"id": 2, "product": "nut", "price": 0.25},
        {"id": 3, "product": "gear", "price": 12.0},
    ]


def test_cr_only_latin1_with_declared_types_and_quoted_fields(tmp_path):
    data = 'name;city;n\r"Müller, J.";Zürich;1\rAnaïs;Besançon;2'.encode("latin1")  # no final CR
    (tmp_path / "mac.csv").write_bytes(data)
    frame = read_all(
        tmp_path, path="mac.csv", options={"delimiter": ";", "encoding": "latin1"}, schema={"n": "int"}
    )
    assert frame.to_dicts() == [
        {"name": "Müller, J.", "city": "Zürich", "n": 1},
        {"name": "Anaïs", "city": "Besançon", "n": 2},
    ]


def test_cr_only_bad_value_is_located_on_its_line(tmp_path):
    (tmp_path / "mac.csv").write_bytes(b"id,v\r1,2\r2,x\r")
    with pytest.raises(DataError, match=r"mac\.csv, line 3, field 'v': value 'x' is not a valid int"):
        read_all(tmp_path, path="mac.csv", schema={"v": "int"})


def test_one_giant_line_is_an_error_not_zero_rows(tmp_path):
    """Records separated by something that is not a line break (here the ASCII record separator):
    one line of 100 KB, which used to give 0 rows and SUCCESS."""
    records = "\x1e".join(f"{i},sensor-{i},{i * 0.5}" for i in range(5000))
    (tmp_path / "export.csv").write_text("id,name,value\x1e" + records)
    with pytest.raises(DataError) as err:
        read_all(tmp_path, path="export.csv")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'export.csv'}, line 1: one line of ") and "\n" not in message
    assert "no line break" in message


def test_a_header_alone_is_still_zero_rows_with_its_columns(tmp_path):
    (tmp_path / "empty.csv").write_text("id,name,value")
    frame = read_all(tmp_path, path="empty.csv")
    assert frame.height == 0 and frame.columns == ["id", "name", "value"]


def test_cr_only_csv_runs_end_to_end(tmp_path, capsys):
    from app.cli import main

    (tmp_path / "mac.csv").write_bytes(b"id,v\r1,2\r2,3\r")
    spec = {
        "name": "Old Mac",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": "mac.csv"}}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    (tmp_path / "p.json").write_text(json.dumps(spec))
    assert main(["run", str(tmp_path / "p.json"), "--json", "--data-dir", str(tmp_path / "data")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "success" and record["rows_out"] == 2
    assert json.loads((tmp_path / "out.json").read_text()) == [{"id": 1, "v": 2}, {"id": 2, "v": 3}]


# ---- Excel --------------------------------------------------------------------------------------
def break_cell(good: Path, bad: Path, cell: str, new_ref: str) -> None:
    """A copy of `good` whose sheet1 cell `cell` claims to be at `new_ref` (zip members rewritten)."""
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data, count = re.subn(rf' r="{cell}"'.encode(), f' r="{new_ref}"'.encode(), data)
                assert count == 1
            dst.writestr(item, data)


@pytest.fixture
def good_xlsx(tmp_path) -> Path:
    path = tmp_path / "good.xlsx"
    pl.DataFrame({"tag": ["FT-101", "TT-204", "PT-330"], "value": [1.5, 2.5, 3.5]}).write_excel(path)
    return path


@pytest.mark.parametrize(
    ("new_ref", "why"),
    [
        ("XFD1048576", "reading up to it would take 17,179,869,184 cells for the 8 the sheet holds"),
        ("B99999999", "not a valid cell reference"),
        ("ZZZZ4", "not a valid cell reference"),
    ],
)
def test_broken_cell_reference_is_one_line_naming_the_cell(tmp_path, good_xlsx, new_ref, why):
    bad = tmp_path / "bad.xlsx"
    break_cell(good_xlsx, bad, "B4", new_ref)
    assert bad.stat().st_size < 20_000
    started = time.monotonic()
    with pytest.raises(DataError) as err:
        read_all(tmp_path, path="bad.xlsx")
    assert time.monotonic() - started < 10  # milliseconds in fact; the unguarded reader took minutes
    assert str(err.value) == f"{bad}: sheet 'Sheet1' cell {new_ref}: {why}" + (
        " (a broken cell reference?)" if "cells for" in why else " (the last cell of a sheet is XFD1048576)"
    )


def test_a_far_but_real_cell_is_still_read(tmp_path, good_xlsx):
    """A lone cell far down column A is a sparse sheet, not a broken one: it is read."""
    far = tmp_path / "far.xlsx"
    break_cell(good_xlsx, far, "A4", "A5000")
    frame = read_all(tmp_path, path="far.xlsx")
    # (empty rows between are dropped, as for any sheet)
    assert frame["tag"].to_list() == ["FT-101", "TT-204", None, "PT-330"]


def test_golden_broken_xlsx_through_the_command_line(tmp_path):
    """The golden 6 KB file: a separate process, so that a reader allocating the whole sheet (which
    aborted the process before the guard) shows as a failed assertion, not a crashed test run."""
    target = tmp_path / "broken_cell_ref.xlsx"
    target.write_bytes(BROKEN_XLSX.read_bytes())
    spec = {
        "name": "Broken workbook",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": target.name}}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
    }
    (tmp_path / "p.json").write_text(json.dumps(spec))
    command = [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())"]
    done = subprocess.run(
        [*command, "run", str(tmp_path / "p.json"), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{target}: sheet 'Shift A' cell XFD1048576: reading up to it would take" in errors[0]
    assert not (tmp_path / "out.csv").exists()


# ---- XML ----------------------------------------------------------------------------------------
def test_xml_dotted_tag_and_nested_tags_do_not_collide(tmp_path):
    (tmp_path / "plant.xml").write_text(
        "<plant><unit>"
        "<flow.rate>12.5</flow.rate><flow><rate>99</rate></flow>"
        '<pump.a state.now="on">P1</pump.a>'
        "</unit></plant>"
    )
    row = read_all(tmp_path, path="plant.xml").to_dicts()
    assert row == [{"flow..rate": "12.5", "flow.rate": "99", "pump..a.state..now": "on", "pump..a": "P1"}]


def test_xml_dotted_names_survive_a_write_and_a_read(tmp_path):
    """The writer is the reader's inverse: a flattened name is written nested, a doubled dot as a dot
    inside the tag; reading the file gives back the same columns."""
    frame = pl.DataFrame(
        {
            "id": ["U1", "U2"],
            "flow.rate": ["99", None],
            "flow..rate": ["12.5", "13.0"],
            "customer.email": ["a@x", "b@y"],
            "customer.name": ["Ann", None],
        }
    )
    ctx = RunContext(base_dir=tmp_path)
    config = FileConnector.SinkConfig.model_validate({"path": "plant.xml"})
    sink = FileConnector.make_sink(config, ctx, "out")
    sink.open()
    sink.write(frame)
    sink.close()
    text = (tmp_path / "plant.xml").read_text()
    assert "<flow><rate>99</rate></flow><flow.rate>12.5</flow.rate>" in text, text
    assert "<customer><email>b@y</email></customer></record>" in text, text  # a null leaves no element
    back = read_all(tmp_path, path="plant.xml")
    assert back.select(frame.columns).to_dicts() == frame.to_dicts()


# ---- duplicate JSON keys ------------------------------------------------------------------------
DUPLICATES = [
    # (records as text, the record that is wrong (1-based), the message's key part)
    (['{"a": 1, "b": 2}', '{"a": 1, "b": 2, "a": 3}'], 2, 'duplicate key "a" (each'),
    (['{"a": 1, "b": {"c": 1, "c": 2}}'], 1, 'duplicate key "c" at b.c'),
    (['{"x": [{"k": 1}]}', '{"x": [{"k": 1}, {"k": 1, "k": 2}]}'], 2, 'duplicate key "k" at x[1].k'),
    (['{"x": [{"y": [{"z": 1, "w": {"v": 1, "v": 1}}]}]}'], 1, 'duplicate key "v" at x[0].y[0].w.v'),
    # a field that is text in one record and an object in another is a string column: the
    # objects inside it, at any depth, are checked too (found by hypothesis, below)
    (['{"_": ""}', '{"_": {"_": {"_": null, "_": "again"}}}'], 2, 'duplicate key "_" at _._._'),
    (['{"a": "x"}', '{"a": [1, {"k": 1, "k": 2}]}'], 2, 'duplicate key "k" at a[1].k'),
    (['{"x": ["t"]}', '{"x": [{"y": {"z": {"w": 1, "w": 2}}}]}'], 2, 'duplicate key "w" at x[0].y.z.w'),
]


@pytest.mark.parametrize(("records", "wrong", "says"), DUPLICATES)
def test_a_duplicate_key_is_one_line_naming_file_line_and_key(tmp_path, records, wrong, says):
    (tmp_path / "d.ndjson").write_text("\n\n".join(records) + "\n")  # blank lines count as lines
    with pytest.raises(DataError) as err:
        read_all(tmp_path, path="d.ndjson")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'd.ndjson'}, line {2 * wrong - 1}: {says}")
    assert "\n" not in message


@pytest.mark.parametrize(("records", "wrong", "says"), DUPLICATES)
def test_a_duplicate_key_in_a_json_array_names_the_record(tmp_path, records, wrong, says):
    (tmp_path / "d.json").write_text("[\n" + ",\n".join(records) + "\n]\n")
    with pytest.raises(DataError) as err:
        read_all(tmp_path, path="d.json")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'd.json'}, record {wrong}: {says}")
    assert "\n" not in message


def test_the_same_key_in_different_objects_is_not_a_duplicate(tmp_path):
    records = [{"a": 1, "b": {"a": 2, "c": {"a": 3}}, "x": [{"a": 1}, {"a": 2}]}, {"a": 4, "x": []}]
    (tmp_path / "fine.ndjson").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "fine.json").write_text(json.dumps(records))
    for name in ("fine.ndjson", "fine.json"):
        frame = read_all(tmp_path, path=name)
        assert frame["a"].to_list() == [1, 4]
        assert frame["b"].struct.field("c").struct.field("a").to_list() == [3, None]


def test_a_big_clean_ndjson_still_reads_and_a_late_duplicate_is_found(tmp_path):
    rows = 200_000
    frame = pl.DataFrame({"id": range(rows), "site": [f"s{i % 7}" for i in range(rows)]}).with_columns(
        meta=pl.struct(unit=pl.lit("kW"), scale=pl.col("id") % 10)
    )
    big = tmp_path / "big.ndjson"
    frame.write_ndjson(big)
    source = FileConnector.make_source(
        FileConnector.SourceConfig.model_validate({"path": "big.ndjson"}), RunContext(base_dir=tmp_path), "in"
    )
    assert sum(b.height for b in source.read(batch_rows=50_000)) == rows
    with big.open("a") as fh:  # one bad record at the very end
        fh.write('{"id": -1, "site": "s0", "meta": {"unit": "kW", "scale": 1, "scale": 2}}\n')
    with pytest.raises(
        DataError, match=rf"big\.ndjson, line {rows + 1}: duplicate key \"scale\" at meta\.scale"
    ):
        list(source.read(batch_rows=50_000))


keys = st.text(alphabet="abcxyz_", min_size=1, max_size=3)
scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(alphabet="pqr ", max_size=4)
json_objects = st.recursive(
    st.dictionaries(keys, scalars, min_size=1, max_size=4),
    lambda inner: st.dictionaries(
        keys, scalars | inner | st.lists(inner, min_size=1, max_size=3), min_size=1, max_size=4
    ),
    max_leaves=12,
)


def dump_with_duplicate(value, target: int | None, counter: list[int]) -> str:
    """`value` as JSON text; the `target`-th object (in document order) names its first key twice."""
    if isinstance(value, dict):
        number = counter[0]
        counter[0] += 1
        members = [f"{json.dumps(k)}: {dump_with_duplicate(v, target, counter)}" for k, v in value.items()]
        if number == target:
            first_key = next(iter(value))
            members.append(f'{json.dumps(first_key)}: "again"')
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump_with_duplicate(v, target, counter) for v in value) + "]"
    return json.dumps(value)


def count_objects(value) -> int:
    if isinstance(value, dict):
        return 1 + sum(count_objects(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_objects(v) for v in value)
    return 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=json_objects, record=json_objects, data=st.data(), as_array=st.booleans())
def test_an_injected_duplicate_key_is_always_caught_and_never_invented(
    tmp_path, before, record, data, as_array
):
    # a clean record first: where the two differ in type, Polars makes a string column of the
    # objects' JSON text, which must be checked as well
    name = "p.json" if as_array else "p.ndjson"
    target = data.draw(st.integers(0, count_objects(record) - 1), label="object with the duplicate")
    for inject in (None, target):
        texts = [json.dumps(before), dump_with_duplicate(record, inject, [0])]
        (tmp_path / name).write_text("[" + ",\n".join(texts) + "]" if as_array else "\n".join(texts) + "\n")
        try:
            read_all(tmp_path, path=name)
            problem = None
        except DataError as exc:  # a random record may be refused for its shape too, never for keys
            problem = str(exc)
        if inject is None:
            assert problem is None or "duplicate key" not in problem
        else:
            assert problem is not None and "duplicate key" in problem, texts
            assert problem.startswith(f"{tmp_path / name}, {'record' if as_array else 'line'} 2: ")


def test_nested_objects_in_a_column_polars_reads_as_text_read_when_their_keys_are_unique(tmp_path):
    # NDJSON only: Polars' JSON-array reader refuses a field that is text and an object
    lines = ['{"a": "x"}', '{"a": {"b": {"c": 1, "d": [{"c": 2}]}}}', '{"a": [1, {"c": 3}]}']
    (tmp_path / "deep.ndjson").write_text("\n".join(lines) + "\n")
    values = read_all(tmp_path, path="deep.ndjson")["a"].to_list()
    assert values[0] == "x"
    assert [json.loads(v) for v in values[1:]] == [json.loads(t)["a"] for t in lines[1:]]


def test_an_object_in_a_column_polars_reads_as_text_is_checked_too(tmp_path):
    lines = ['{"a": {"b": 1}}', '{"a": "x"}', '{"a": {"b": 1, "b": 2}}']
    (tmp_path / "mixed.ndjson").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"mixed\.ndjson, line 3: duplicate key \"b\" at a\.b"):
        read_all(tmp_path, path="mixed.ndjson")
    (tmp_path / "mixed.ndjson").write_text("\n".join(lines[:2]) + "\n")
    assert read_all(tmp_path, path="mixed.ndjson")["a"].to_list() == ['{"b": 1}', "x"]
