"""The `file` connector as a destination: exact bytes per format, modes, atomic replace, abort."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest

from engine.connectors.file import FileConnector, FileSink
from engine.context import RunContext
from engine.errors import ConnectorError

BERLIN = dt.timezone(dt.timedelta(hours=1))
ROWS = pl.DataFrame(
    {
        "id": [1, 2],
        "price": [10.0, 2.5],
        "name": ['bolt, "M6"', None],
        "ok": [True, False],
    }
)


def sink(tmp_path: Path, **config) -> FileSink:
    ctx = RunContext(base_dir=tmp_path)
    return FileConnector.make_sink(FileConnector.SinkConfig.model_validate(config), ctx, "out")


def write(tmp_path: Path, *batches: pl.DataFrame, **config) -> Path:
    out = sink(tmp_path, **config)
    out.open()
    for batch in batches:
        out.write(batch)
    out.close()
    return Path(out.describe_target())


def read(tmp_path: Path, **config) -> pl.DataFrame:
    ctx = RunContext(base_dir=tmp_path)
    src = FileConnector.make_source(FileConnector.SourceConfig.model_validate(config), ctx, "in")
    return pl.concat(list(src.read()), how="diagonal_relaxed")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# ---- exact output per format -------------------------------------------------------------------
def test_csv_bytes(tmp_path):
    target = write(tmp_path, ROWS.head(1), ROWS.tail(1), path="out.csv")
    assert target.read_text() == 'id,price,name,ok\n1,10.0,"bolt, ""M6""",true\n2,2.5,,false\n'


def test_json_is_one_array_of_objects(tmp_path):
    target = write(tmp_path, ROWS.head(1), ROWS.tail(1), path="out.json")
    assert target.read_text() == (
        '[\n{"id":1,"price":10.0,"name":"bolt, \\"M6\\"","ok":true},\n'
        '{"id":2,"price":2.5,"name":null,"ok":false}\n]\n'
    )


def test_json_with_no_rows_is_an_empty_array(tmp_path):
    assert write(tmp_path, path="out.json").read_text() == "[]\n"
    assert write(tmp_path, ROWS.head(0), path="empty.json").read_text() == "[]\n"


def test_ndjson_bytes(tmp_path):
    target = write(tmp_path, ROWS, path="out.ndjson")
    assert target.read_text() == (
        '{"id":1,"price":10.0,"name":"bolt, \\"M6\\"","ok":true}\n{"id":2,"price":2.5,"name":null,"ok":false}\n'
    )


def test_xml_bytes_and_record_path(tmp_path):
    rows = pl.DataFrame({"id": [1, 2], "unit price": [1.5, None], "note": ["a < b & c", "x"]})
    target = write(tmp_path, rows, path="out.xml", options={"record_path": "orders/order"})
    assert target.read_text() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n<orders>\n'
        "  <order><id>1</id><unit_price>1.5</unit_price><note>a &lt; b &amp; c</note></order>\n"
        "  <order><id>2</id><note>x</note></order>\n"
        "</orders>\n"
    )
    assert read(tmp_path, path="out.xml").to_dicts() == [
        {"id": "1", "unit_price": "1.5", "note": "a < b & c"},
        {"id": "2", "unit_price": None, "note": "x"},
    ]


def test_xml_writes_structs_as_nested_elements_and_lists_as_repeats(tmp_path):
    rows = pl.DataFrame({"customer": [{"name": "Ann", "email": "a@x"}], "tag": [["a", "b"]]})
    target = write(tmp_path, rows, path="out.xml")
    assert (
        "<record><customer><name>Ann</name><email>a@x</email></customer><tag>a</tag><tag>b</tag></record>"
        in (target.read_text())
    )
    assert read(tmp_path, path="out.xml").to_dicts() == [
        {"customer.name": "Ann", "customer.email": "a@x", "tag": ["a", "b"]}
    ]


def test_parquet_round_trip_keeps_types(tmp_path):
    rows = ROWS.with_columns(at=pl.Series([dt.datetime(2026, 1, 1, 8)] * 2).dt.replace_time_zone("UTC"))
    write(tmp_path, rows.head(1), rows.tail(1), path="out.parquet")
    assert pl.read_parquet(tmp_path / "out.parquet").equals(rows)


def test_parquet_batches_with_other_columns_or_types(tmp_path):
    first = pl.DataFrame({"id": [1], "v": [1.5]})
    narrower = pl.DataFrame({"id": pl.Series([2], dtype=pl.Int32)})  # cast to the first schema
    wider = pl.DataFrame({"id": [3], "v": [3.5], "extra": ["x"]})  # switches to collecting
    write(tmp_path, first, narrower, wider, path="out.parquet")
    assert pl.read_parquet(tmp_path / "out.parquet").to_dicts() == [
        {"id": 1, "v": 1.5, "extra": None},
        {"id": 2, "v": None, "extra": None},
        {"id": 3, "v": 3.5, "extra": "x"},
    ]


def test_excel_round_trip(tmp_path):
    write(tmp_path, ROWS.head(1), ROWS.tail(1), path="out.xlsx", options={"sheet": "Orders"})
    assert read(tmp_path, path="out.xlsx", options={"sheet": "Orders"}).equals(ROWS)


# ---- value formatting --------------------------------------------------------------------------
def test_timestamps_are_iso_utc_with_z(tmp_path):
    rows = pl.DataFrame(
        {
            "aware": [
                dt.datetime(2026, 1, 1, 9, 0, tzinfo=BERLIN),
                dt.datetime(2026, 1, 1, 9, 0, 0, 250000, tzinfo=BERLIN),
            ],
            "naive": [dt.datetime(2026, 1, 1, 8, 0), dt.datetime(2026, 1, 1, 8, 0, 0, 123456)],
            "day": [dt.date(2026, 1, 2), None],
        }
    )
    target = write(tmp_path, rows, path="out.ndjson")
    assert target.read_text() == (
        '{"aware":"2026-01-01T08:00:00Z","naive":"2026-01-01T08:00:00Z","day":"2026-01-02"}\n'
        '{"aware":"2026-01-01T08:00:00.250Z","naive":"2026-01-01T08:00:00.123456Z","day":null}\n'
    )
    csv = write(tmp_path, rows, path="out.csv").read_text()
    assert csv.splitlines()[1] == "2026-01-01T08:00:00Z,2026-01-01T08:00:00Z,2026-01-02"


def test_csv_writes_nested_values_as_json_text(tmp_path):
    rows = pl.DataFrame(
        {
            "id": [1, 2],
            "customer": [{"name": "Ann", "since": dt.date(2020, 5, 1)}, None],
            "tags": [["a", "b"], []],
        }
    )
    target = write(tmp_path, rows, path="out.csv", options={"delimiter": ";"})
    assert target.read_text() == (
        'id;customer;tags\n1;"{""name"":""Ann"",""since"":""2020-05-01""}";"[""a"",""b""]"\n2;;[]\n'
    )


def test_json_keeps_nested_objects_and_arrays(tmp_path):
    rows = pl.DataFrame({"customer": [{"name": "Ann", "at": dt.datetime(2026, 1, 1)}], "tags": [[1.0, 2.5]]})
    target = write(tmp_path, rows, path="out.json")
    assert (
        target.read_text()
        == '[\n{"customer":{"name":"Ann","at":"2026-01-01T00:00:00Z"},"tags":[1.0,2.5]}\n]\n'
    )


def test_csv_without_header_and_latin1(tmp_path):
    rows = pl.DataFrame({"name": ["José"], "city": ["Zürich"]})
    target = write(tmp_path, rows, path="out.csv", options={"header": False, "encoding": "latin1"})
    assert target.read_bytes() == "José,Zürich\n".encode("latin1")


# ---- modes -------------------------------------------------------------------------------------
def test_overwrite_replaces_the_old_content(tmp_path):
    (tmp_path / "out.csv").write_text("old\n")
    assert write(tmp_path, ROWS.head(1), path="out.csv").read_text().startswith("id,price")


def test_append_csv_keeps_one_header(tmp_path):
    write(tmp_path, ROWS.head(1), path="out.csv")
    write(tmp_path, ROWS.tail(1), path="out.csv", mode="append")
    assert read(tmp_path, path="out.csv").equals(ROWS)


def test_append_csv_with_a_new_column_widens_the_header(tmp_path):
    (tmp_path / "out.csv").write_text("id,name\n1,a")  # no final newline
    write(
        tmp_path,
        pl.DataFrame({"id": [2], "extra": ["x"]}),
        pl.DataFrame({"name": ["c"]}),
        path="out.csv",
        mode="append",
    )
    assert (tmp_path / "out.csv").read_text() == "id,name,extra\n1,a,\n2,,x\n,c,\n"


def test_append_latin1_csv(tmp_path):
    (tmp_path / "out.csv").write_bytes("name\nJosé\n".encode("latin1"))
    write(
        tmp_path,
        pl.DataFrame({"name": ["Anaïs"]}),
        path="out.csv",
        mode="append",
        options={"encoding": "latin1"},
    )
    assert (tmp_path / "out.csv").read_bytes() == "name\nJosé\nAnaïs\n".encode("latin1")


def test_append_json_continues_the_array(tmp_path):
    write(tmp_path, ROWS.head(1), path="out.json")
    write(tmp_path, ROWS.tail(1), path="out.json", mode="append")
    assert read(tmp_path, path="out.json").equals(ROWS)
    (tmp_path / "empty.json").write_text("[ ]\n")
    write(tmp_path, ROWS.head(1), path="empty.json", mode="append")
    assert (tmp_path / "empty.json").read_text() == (
        '[\n{"id":1,"price":10.0,"name":"bolt, \\"M6\\"","ok":true}\n]\n'
    )


def test_append_to_a_json_that_is_not_an_array(tmp_path):
    (tmp_path / "out.json").write_text('{"a": 1}')
    out = sink(tmp_path, path="out.json", mode="append")
    with pytest.raises(ConnectorError, match="cannot append, the file is not a JSON array"):
        out.open()
    assert (tmp_path / "out.json").read_text() == '{"a": 1}'
    assert leftovers(tmp_path) == []


def test_append_ndjson_parquet_excel_xml(tmp_path):
    for name in ("out.ndjson", "out.parquet", "out.xlsx", "out.xml"):
        write(tmp_path, ROWS.head(1), path=name)
        write(tmp_path, ROWS.tail(1), path=name, mode="append")
        back = read(tmp_path, path=name)
        assert back.height == 2, name
        assert back["name"].to_list() == ['bolt, "M6"', None], name


def test_append_with_new_columns_unions_by_name(tmp_path):
    for name in ("out.ndjson", "out.parquet", "out.xlsx", "out.json"):
        write(tmp_path, pl.DataFrame({"id": [1]}), path=name)
        write(tmp_path, pl.DataFrame({"id": [2], "extra": ["x"]}), path=name, mode="append")
        assert read(tmp_path, path=name).to_dicts() == [{"id": 1, "extra": None}, {"id": 2, "extra": "x"}], (
            name
        )


def test_append_to_a_missing_file_creates_it(tmp_path):
    assert write(tmp_path, ROWS, path="new/out.csv", mode="append").read_text().count("\n") == 3


# ---- atomicity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.csv", "out.json", "out.ndjson", "out.parquet", "out.xlsx", "out.xml"])
def test_abort_after_writes_leaves_no_file(tmp_path, name):
    out = sink(tmp_path, path=name)
    out.open()
    out.write(ROWS)
    out.write(ROWS)
    assert not (tmp_path / name).exists()  # nothing at the target until close()
    out.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["overwrite", "append"])
def test_abort_keeps_the_old_content(tmp_path, mode):
    (tmp_path / "out.json").write_text('[{"id": 0}]')
    out = sink(tmp_path, path="out.json", mode=mode)
    out.open()
    out.write(ROWS)
    out.abort()
    assert (tmp_path / "out.json").read_text() == '[{"id": 0}]'
    assert leftovers(tmp_path) == []


def test_close_replaces_the_target_in_one_step(tmp_path):
    (tmp_path / "out.csv").write_text("old\n")
    os.chmod(tmp_path / "out.csv", 0o640)
    before = (tmp_path / "out.csv").stat().st_ino
    out = sink(tmp_path, path="out.csv")
    out.open()
    out.write(ROWS)
    temp = leftovers(tmp_path)
    assert len(temp) == 1 and temp[0].startswith(".out.csv.tmp-")
    assert (tmp_path / "out.csv").read_text() == "old\n"  # readers still see the old file
    out.close()
    assert (tmp_path / "out.csv").stat().st_ino != before  # a rename, not a rewrite in place
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o640
    assert leftovers(tmp_path) == []


def test_a_failing_write_removes_the_temporary_file(tmp_path):
    out = sink(tmp_path, path="out.csv", options={"header": False})
    out.open()
    out.write(pl.DataFrame({"a": [1]}))
    with pytest.raises(ConnectorError, match="new column 'b' in a CSV without a header"):
        out.write(pl.DataFrame({"a": [2], "b": [3]}))
    out.abort()
    assert list(tmp_path.iterdir()) == []


def test_makes_the_folder_and_describes_the_target(tmp_path):
    target = write(tmp_path, ROWS, path="deep/er/out.ndjson")
    assert target == tmp_path / "deep" / "er" / "out.ndjson"
    assert target.is_file()


def test_check_reports_an_unwritable_folder(tmp_path):
    sink(tmp_path, path="new/folder/out.csv").check()  # creatable: fine
    # A file where a folder should be cannot be written even by root (chmod would not stop root).
    (tmp_path / "report.txt").write_text("not a folder")
    with pytest.raises(ConnectorError, match="not writable"):
        sink(tmp_path, path="report.txt/sub/out.csv").check()


def test_describe_shows_the_schema_option_by_its_name():
    described = FileConnector.describe()
    assert "schema" in described["source_schema"]["properties"]
    assert described["destination_schema"]["properties"]["mode"]["default"] == "overwrite"


@pytest.mark.parametrize("name", ["out.csv", "out.json", "out.ndjson", "out.parquet", "out.xlsx", "out.xml"])
def test_no_batches_gives_a_valid_empty_file(tmp_path, name):
    target = write(tmp_path, path=name)
    assert target.is_file()
    ctx = RunContext(base_dir=tmp_path)
    src = FileConnector.make_source(FileConnector.SourceConfig.model_validate({"path": name}), ctx, "in")
    assert sum(b.height for b in src.read()) == 0


@pytest.mark.parametrize("codec", [None, "zstd", "lz4", "uncompressed"])
def test_parquet_compression_option(tmp_path, codec):
    import pyarrow.parquet as pq

    options = {"compression": codec} if codec else {}
    target = write(tmp_path, ROWS, ROWS, path="out.parquet", options=options)
    meta = pq.ParquetFile(target).metadata
    assert meta.row_group(0).column(0).compression == (codec or "snappy").upper()
    assert pl.read_parquet(target).height == 2 * ROWS.height


def test_parquet_compression_is_for_parquet_only(tmp_path):
    with pytest.raises(ValueError, match=r"options\.compression applies to parquet files"):
        sink(tmp_path, path="out.csv", options={"compression": "zstd"})
