"""The `file` connector as a source: every format, globs, options, declared types, streaming, errors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from engine.connectors import registry
from engine.connectors.file import FileConnector, FileSource
from engine.context import RunContext
from engine.errors import ConnectorError, DataError

ORDERS = pl.DataFrame({"id": [1, 2, 3], "product": ["bolt", "nut", "gear"], "price": [0.5, 0.25, 12.0]})


def source(tmp_path: Path, log: list | None = None, **config) -> FileSource:
    ctx = RunContext(base_dir=tmp_path)
    if log is not None:
        ctx.log = lambda level, msg, node=None: log.append((level, msg, node))
    return FileConnector.make_source(FileConnector.SourceConfig.model_validate(config), ctx, "input")


def read_all(tmp_path: Path, batch_rows: int = 1_000_000, limit: int | None = None, **config) -> pl.DataFrame:
    batches = list(source(tmp_path, **config).read(limit=limit, batch_rows=batch_rows))
    return pl.concat(batches, how="diagonal_relaxed") if batches else pl.DataFrame()


# ---- every format ------------------------------------------------------------------------------
def test_registry_knows_the_file_connector():
    assert registry.get("FILE") is FileConnector
    assert FileConnector.describe()["roles"] == ["source", "destination"]


def test_reads_csv(tmp_path):
    (tmp_path / "orders.csv").write_text("id,product,price\n1,bolt,0.5\n2,nut,0.25\n3,gear,12.0\n")
    assert read_all(tmp_path, path="orders.csv").equals(ORDERS)


def test_reads_json_array_with_nested_objects_and_arrays(tmp_path):
    (tmp_path / "orders.json").write_text(
        json.dumps(
            [
                {"id": 1, "customer": {"name": "Ann", "email": "ann@example.com"}, "tags": ["a", "b"]},
                {"id": 2, "customer": {"name": "Bob", "email": None}, "tags": []},
            ]
        )
    )
    frame = read_all(tmp_path, path="orders.json")
    assert frame.schema["customer"] == pl.Struct({"name": pl.String, "email": pl.String})
    assert frame.schema["tags"] == pl.List(pl.String)
    assert frame["customer"].struct.field("email").to_list() == ["ann@example.com", None]
    assert frame["tags"].to_list() == [["a", "b"], []]


def test_reads_ndjson_and_skips_blank_lines(tmp_path):
    (tmp_path / "orders.ndjson").write_text('{"id": 1, "v": 1.5}\n\n{"id": 2, "v": 2}\n')
    frame = read_all(tmp_path, path="orders.ndjson")
    assert frame.to_dicts() == [{"id": 1, "v": 1.5}, {"id": 2, "v": 2.0}]


def test_ndjson_keeps_a_key_that_first_appears_late(tmp_path):
    lines = [json.dumps({"id": i}) for i in range(500)] + [json.dumps({"id": 500, "late": "x"})]
    (tmp_path / "late.jsonl").write_text("\n".join(lines) + "\n")
    frame = read_all(tmp_path, path="late.jsonl")
    assert frame.height == 501
    assert frame["late"].to_list()[-1] == "x"


def test_reads_parquet(tmp_path):
    ORDERS.write_parquet(tmp_path / "orders.parquet")
    assert read_all(tmp_path, path="orders.parquet").equals(ORDERS)
    assert source(tmp_path, path="orders.parquet").schema() == ORDERS.schema


def test_reads_excel_by_sheet_name_and_index(tmp_path):
    import xlsxwriter

    book = xlsxwriter.Workbook(tmp_path / "book.xlsx")
    ORDERS.write_excel(book, worksheet="first")
    pl.DataFrame({"other": ["x", "y"]}).write_excel(book, worksheet="second")
    book.close()
    assert read_all(tmp_path, path="book.xlsx").equals(ORDERS)
    assert read_all(tmp_path, path="book.xlsx", options={"sheet": 1})["other"].to_list() == ["x", "y"]
    assert read_all(tmp_path, path="book.xlsx", options={"sheet": "second"}).columns == ["other"]


def test_excel_unknown_sheet_lists_the_sheets(tmp_path):
    ORDERS.write_excel(tmp_path / "book.xlsx", worksheet="Data")
    with pytest.raises(ConnectorError, match=r"no sheet 'Nope' \(sheets: Data\)"):
        read_all(tmp_path, path="book.xlsx", options={"sheet": "Nope"})


XML = """<?xml version="1.0"?>
<shop>
  <header><created>2026-01-01</created></header>
  <orders>
    <order id="1" status="paid">
      <product>bolt</product>
      <customer><name>Ann</name><email>ann@example.com</email></customer>
      <price currency="EUR">0.5</price>
      <tag>a</tag><tag>b</tag>
    </order>
    <order id="2">
      <product>nut &amp; bolt</product>
      <customer><name>Bob</name><email/></customer>
      <price currency="USD">0.25</price>
      <tag>c</tag>
    </order>
  </orders>
</shop>
"""


def test_reads_xml_records_with_attributes_nested_names_and_lists(tmp_path):
    (tmp_path / "shop.xml").write_text(XML)
    frame = read_all(tmp_path, path="shop.xml", options={"record_path": "shop/orders/order"})
    assert frame.columns == [
        "id",
        "status",
        "product",
        "customer.name",
        "customer.email",
        "price.currency",
        "price",
        "tag",
    ]
    assert frame.row(0) == ("1", "paid", "bolt", "Ann", "ann@example.com", "EUR", "0.5", ["a", "b"])
    assert frame.row(1) == ("2", None, "nut & bolt", "Bob", None, "USD", "0.25", ["c"])


def test_xml_record_path_by_tag_at_any_depth(tmp_path):
    (tmp_path / "shop.xml").write_text(XML)
    for record_path in ("//order", "order"):
        frame = read_all(tmp_path, path="shop.xml", options={"record_path": record_path})
        assert frame["product"].to_list() == ["bolt", "nut & bolt"]


def test_xml_default_records_are_the_children_of_the_root(tmp_path):
    (tmp_path / "rows.xml").write_text("<rows><row><a>1</a></row><row><a>2</a><b>x</b></row></rows>")
    assert read_all(tmp_path, path="rows.xml").to_dicts() == [{"a": "1", "b": None}, {"a": "2", "b": "x"}]


def test_explicit_format_overrides_the_extension(tmp_path):
    (tmp_path / "export.dat").write_text("a;b\n1;2\n")
    frame = read_all(tmp_path, path="export.dat", format="csv", options={"delimiter": ";"})
    assert frame.to_dicts() == [{"a": 1, "b": 2}]


# ---- globs -------------------------------------------------------------------------------------
def test_glob_reads_every_match_in_name_order_and_unions_by_column_name(tmp_path):
    (tmp_path / "b.csv").write_text("id,extra\n3,x\n")
    (tmp_path / "a.csv").write_text("id,price\n1,0.5\n2,1.5\n")
    (tmp_path / ".a.csv.tmp-1234").write_text("id\n99\n")  # a sink's temporary file is never read
    batches = list(source(tmp_path, path="*.csv").read())
    assert [b.columns for b in batches] == [["id", "price", "extra"]] * 2
    frame = pl.concat(batches)
    assert frame.to_dicts() == [
        {"id": 1, "price": 0.5, "extra": None},
        {"id": 2, "price": 1.5, "extra": None},
        {"id": 3, "price": None, "extra": "x"},
    ]
    assert source(tmp_path, path="*.csv").schema() == frame.schema


def test_recursive_glob(tmp_path):
    for day in ("2026-01-01", "2026-01-02"):
        (tmp_path / "logs" / day).mkdir(parents=True)
        (tmp_path / "logs" / day / "events.ndjson").write_text(json.dumps({"day": day}) + "\n")
    frame = read_all(tmp_path, path="logs/**/*.ndjson")
    assert frame["day"].to_list() == ["2026-01-01", "2026-01-02"]


def test_glob_with_no_match(tmp_path):
    with pytest.raises(ConnectorError, match=r"nowhere/\*\.csv: no file matches"):
        read_all(tmp_path, path="nowhere/*.csv")


def test_missing_file(tmp_path):
    with pytest.raises(ConnectorError, match=r"/orders\.json: file not found$"):
        read_all(tmp_path, path="orders.json")
    with pytest.raises(ConnectorError, match="file not found"):
        source(tmp_path, path="orders.json").check()


# ---- options -----------------------------------------------------------------------------------
def test_csv_delimiter_header_and_latin1(tmp_path):
    (tmp_path / "export.csv").write_bytes("José;Zürich;1,5\nAnaïs;Besançon;2\n".encode("latin1"))
    frame = read_all(
        tmp_path, path="export.csv", options={"delimiter": ";", "header": False, "encoding": "latin1"}
    )
    assert frame.columns == ["column_1", "column_2", "column_3"]
    assert frame["column_1"].to_list() == ["José", "Anaïs"]
    assert frame["column_2"].to_list() == ["Zürich", "Besançon"]


def test_tsv_defaults_to_tab(tmp_path):
    (tmp_path / "data.tsv").write_text("a\tb\n1\tx y\n")
    assert read_all(tmp_path, path="data.tsv").to_dicts() == [{"a": 1, "b": "x y"}]


def test_latin1_bytes_read_as_utf8_are_a_data_error(tmp_path):
    (tmp_path / "export.csv").write_bytes("name\nJosé\n".encode("latin1"))
    with pytest.raises(DataError, match=r"export\.csv"):
        read_all(tmp_path, path="export.csv")


def test_an_option_for_another_format_is_rejected():
    with pytest.raises(ValidationError, match=r"options\.delimiter applies to csv files, not json"):
        FileConnector.SourceConfig.model_validate({"path": "x.json", "options": {"delimiter": ";"}})
    with pytest.raises(ValidationError, match="one character"):
        FileConnector.SourceConfig.model_validate({"path": "x.csv", "options": {"delimiter": ";;"}})
    with pytest.raises(ValidationError, match="unknown encoding"):
        FileConnector.SourceConfig.model_validate({"path": "x.csv", "options": {"encoding": "klingon"}})


def test_unknown_extension_lists_the_formats():
    with pytest.raises(ValidationError, match=r"'\.dat'.*allowed: csv, json, ndjson, parquet, excel, xml"):
        FileConnector.SourceConfig.model_validate({"path": "export.dat"})
    with pytest.raises(ValidationError):
        FileConnector.SourceConfig.model_validate({"path": "x.csv", "format": "yaml"})
    with pytest.raises(ValidationError, match=r"[Ee]xtra inputs are not permitted"):
        FileConnector.SourceConfig.model_validate({"path": "x.csv", "colour": "red"})


# ---- declared types ----------------------------------------------------------------------------
def test_schema_option_forces_types(tmp_path):
    (tmp_path / "m.csv").write_text(
        "code,qty,ok,day,at\n"
        "007,3,yes,2026-01-02,2026-01-01T09:00:00+01:00\n"
        "010,,false,2026-01-03,2026-01-01 08:30:00\n"
    )
    schema = {"code": "string", "qty": "float", "ok": "bool", "day": "date", "at": "datetime"}
    frame = read_all(tmp_path, path="m.csv", schema=schema)
    assert frame.schema == pl.Schema(
        {
            "code": pl.String,
            "qty": pl.Float64,
            "ok": pl.Boolean,
            "day": pl.Date,
            "at": pl.Datetime("us", "UTC"),
        }
    )
    assert frame["code"].to_list() == ["007", "010"]
    assert frame["ok"].to_list() == [True, False]
    assert frame["at"].to_list() == [
        dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, 8, 30, tzinfo=dt.UTC),
    ]
    assert source(tmp_path, path="m.csv", schema=schema).schema() == frame.schema


def test_schema_option_value_that_does_not_fit_names_line_and_field(tmp_path):
    rows = ["id,price"] + [f"{i},{i}.5" for i in range(1, 80)]
    rows[56] = '56,"abc"'  # line 57 of the file
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        read_all(tmp_path, path="p.csv", schema={"price": "float"}, batch_rows=10)
    assert (info.value.line, info.value.field) == (57, "price")
    assert "p.csv, line 57, field 'price': value 'abc' is not a valid float" in str(info.value)


def test_schema_option_on_json_names_the_record(tmp_path):
    (tmp_path / "r.json").write_text('[{"n": 1}, {"n": 2.5}]')
    with pytest.raises(DataError, match=r"record 2, field 'n': value '2.5' is not a valid int"):
        read_all(tmp_path, path="r.json", schema={"n": "int"})


def test_schema_option_naming_a_missing_column(tmp_path):
    (tmp_path / "r.ndjson").write_text('{"n": 1}\n')
    with pytest.raises(DataError, match="column 'm' named in `schema` is not in the file"):
        read_all(tmp_path, path="r.ndjson", schema={"m": "int"})


def test_schema_option_types_xml_text(tmp_path):
    (tmp_path / "shop.xml").write_text(XML)
    frame = read_all(
        tmp_path, path="shop.xml", options={"record_path": "//order"}, schema={"id": "int", "price": "float"}
    )
    assert frame["id"].to_list() == [1, 2]
    assert frame["price"].to_list() == [0.5, 0.25]


def test_schema_is_cheap_for_csv_and_unknown_for_json(tmp_path):
    (tmp_path / "a.csv").write_text("id,v\n1,2.5\n")
    (tmp_path / "a.json").write_text('[{"id": 1}]')
    assert source(tmp_path, path="a.csv").schema() == pl.Schema({"id": pl.Int64, "v": pl.Float64})
    assert source(tmp_path, path="a.json").schema() is None
    assert source(tmp_path, path="missing.csv").schema() is None


# ---- streaming ---------------------------------------------------------------------------------
def test_a_large_file_comes_in_several_batches(tmp_path):
    frame = pl.DataFrame({"id": range(2500), "v": [i * 0.5 for i in range(2500)]})
    frame.write_csv(tmp_path / "big.csv")
    frame.write_ndjson(tmp_path / "big.ndjson")
    frame.write_parquet(tmp_path / "big.parquet")
    frame.write_json(tmp_path / "big.json")
    for name in ("big.csv", "big.ndjson", "big.parquet", "big.json"):
        batches = list(source(tmp_path, path=name).read(batch_rows=1000))
        assert [b.height for b in batches] == [1000, 1000, 500], name
        assert pl.concat(batches).equals(frame), name


def test_xml_comes_in_batches(tmp_path):
    records = "".join(f"<r><i>{i}</i></r>" for i in range(25))
    (tmp_path / "big.xml").write_text(f"<rows>{records}</rows>")
    batches = list(source(tmp_path, path="big.xml").read(batch_rows=10))
    assert [b.height for b in batches] == [10, 10, 5]
    assert pl.concat(batches)["i"].to_list() == [str(i) for i in range(25)]


def test_limit_stops_early(tmp_path):
    # Polars parses in chunks: a bad line far past the limit is never reached.
    lines = ["id"] + [str(i) for i in range(300_000)] + ["not-a-number"]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    batches = list(source(tmp_path, path="big.csv").read(limit=5, batch_rows=2))
    assert sum(b.height for b in batches) == 5
    assert pl.concat(batches)["id"].to_list() == [0, 1, 2, 3, 4]
    records = "".join(f"<r><i>{i}</i></r>" for i in range(100))
    (tmp_path / "big.xml").write_text(f"<rows>{records}</rows><broken")  # never reached
    assert read_all(tmp_path, path="big.xml", limit=3)["i"].to_list() == ["0", "1", "2"]


def test_limit_spans_the_files_of_a_glob(tmp_path):
    (tmp_path / "a.csv").write_text("id\n1\n2\n")
    (tmp_path / "b.csv").write_text("id\n3\n4\n")
    assert read_all(tmp_path, path="*.csv", limit=3)["id"].to_list() == [1, 2, 3]
    assert list(source(tmp_path, path="*.csv").read(limit=0)) == []


def test_empty_file_gives_no_rows_and_a_warning(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "empty.json").write_text("  \n")
    log: list = []
    assert list(source(tmp_path, log, path="empty.csv").read()) == []
    assert log == [("warning", f"{tmp_path / 'empty.csv'}: empty file, no rows", "input")]
    assert list(source(tmp_path, path="empty.json").read()) == []


# ---- bad input: one clear line -----------------------------------------------------------------
def test_truncated_json_names_line_and_column(tmp_path):
    (tmp_path / "orders.json").write_text('[\n  {"id": 1, "product": "bolt"},\n  {"id": 2, "product": \n')
    with pytest.raises(DataError) as info:
        read_all(tmp_path, path="orders.json")
    assert info.value.line == 4
    assert str(info.value) == f"{tmp_path / 'orders.json'}, line 4: invalid JSON: Expecting value at column 1"


def test_malformed_json_in_the_middle(tmp_path):
    (tmp_path / "orders.json").write_text('[{"id": 1},\n {"id": 2,, "x": 1}]')
    with pytest.raises(DataError, match=r"line 2: invalid JSON: Expecting property name .* at column 11"):
        read_all(tmp_path, path="orders.json")


def test_json_that_is_not_an_array_of_objects(tmp_path):
    (tmp_path / "numbers.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="record 1: expected an object"):
        read_all(tmp_path, path="numbers.json")


def test_malformed_ndjson_names_the_line(tmp_path):
    (tmp_path / "events.ndjson").write_text('{"id": 1}\n\n{"id": 2}\n{"id": 3,,}\n{"id": 4}\n')
    with pytest.raises(DataError) as info:
        read_all(tmp_path, path="events.ndjson")
    assert info.value.line == 4
    assert "events.ndjson, line 4: invalid JSON" in str(info.value)


def test_csv_value_that_does_not_fit_the_inferred_type(tmp_path):
    rows = ["id,price,name"] + [f"{i},{i * 1.5},n{i}" for i in range(1, 300)]
    rows[156] = '156,abc,"two\nlines"'  # line 157; the quoted line break makes the next row line 159
    rows[200] = "200,xyz,n"
    (tmp_path / "orders.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        read_all(tmp_path, path="orders.csv")
    assert (info.value.line, info.value.field) == (157, "price")
    assert "value 'abc' is not a valid float" in str(info.value)
    rows[156] = '156,1.5,"two\nlines"'
    (tmp_path / "orders.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        read_all(tmp_path, path="orders.csv")
    assert (info.value.line, info.value.field) == (202, "price")


def test_csv_with_a_ragged_line(tmp_path):
    (tmp_path / "r.csv").write_text('a,b\n1,2\n3,"x\ny"\n4,5,6\n')
    with pytest.raises(DataError, match=r"r.csv, line 5: line has 3 fields, the header has 2"):
        read_all(tmp_path, path="r.csv")


def test_corrupt_parquet_and_excel(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    (tmp_path / "bad.xlsx").write_text("not a workbook")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        read_all(tmp_path, path="bad.parquet")
    with pytest.raises(DataError, match=r"bad\.xlsx: not a readable Excel file"):
        read_all(tmp_path, path="bad.xlsx")


def test_malformed_xml_names_line_and_column(tmp_path):
    (tmp_path / "bad.xml").write_text("<rows>\n<r><a>1</a></r>\n<r><a>2</b></r>\n</rows>")
    with pytest.raises(DataError, match=r"bad.xml, line 3: invalid XML: mismatched tag at column 10"):
        read_all(tmp_path, path="bad.xml")


def test_a_header_without_rows_gives_an_empty_frame_with_the_columns(tmp_path):
    (tmp_path / "h.csv").write_text("id,name\n")
    batches = list(source(tmp_path, path="h.csv", schema={"id": "int"}).read())
    assert len(batches) == 1
    assert batches[0].height == 0
    # declared columns keep their type; the others' type is unknown (Null: any step accepts them,
    # a DuckDB destination stores them as text)
    assert batches[0].schema == pl.Schema({"id": pl.Int64, "name": pl.Null})


def test_xml_fields_that_first_appear_in_a_later_batch(tmp_path):
    (tmp_path / "r.xml").write_text("<rows><r><a>1</a></r><r><a>2</a></r><r><a>3</a><b>4</b></r></rows>")
    batches = list(source(tmp_path, path="r.xml", schema={"a": "int", "b": "int"}).read(batch_rows=2))
    assert [b.to_dicts() for b in batches] == [[{"a": 1, "b": None}, {"a": 2, "b": None}], [{"a": 3, "b": 4}]]


def test_a_bad_file_in_a_glob_is_named(tmp_path):
    (tmp_path / "a.csv").write_text("id\n1\n")
    (tmp_path / "b.csv").write_text("id\n" + "3\n" * 200 + "x\n")
    batches = source(tmp_path, path="*.csv").read()
    assert next(batches)["id"].to_list() == [1]
    with pytest.raises(DataError, match=r"b\.csv, line 202, field 'id': value 'x' is not a valid int"):
        list(batches)
    (tmp_path / "b.csv").write_text('id,name\n2,"open quote\n')
    with pytest.raises(DataError, match=r"b\.csv: could not parse"):
        list(source(tmp_path, path="*.csv").read())
