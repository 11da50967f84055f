"""The `mysql` source without connectorx (a bundle may leave it out: packaging/README.md): the rows
come through PyMySQL's unbuffered cursor, the same rows and types as connectorx gives. The missing
module is real: a child process blocks `import connectorx` with a meta-path finder before anything
is imported, and reads the table of the real MariaDB on 127.0.0.1:3306 (root, database `test`)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pymysql
import pytest

from tests.conftest import REPO, require_service
from tests.connectors import nodes

pytestmark = pytest.mark.services
BASE = {"host": "127.0.0.1", "port": 3306, "database": "test", "username": "root", "connect_timeout": 3}

# Run in a child: connectorx cannot be imported there, as in a bundle built without it.
CHILD = """
import importlib.abc, json, sys
from pathlib import Path

class NoConnectorx(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "connectorx" or name.startswith("connectorx."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoConnectorx())
sys.path.insert(0, sys.argv[1])
import polars as pl
from tests.connectors import nodes

config, out, tmp = json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
frames = list(nodes.source("mysql", nodes.run_context(tmp), config).read(batch_rows=int(sys.argv[5])))
assert "connectorx" not in sys.modules
print(len(frames))
pl.concat(frames).write_ipc(out)
"""


def sql(statement: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    try:
        conn.cursor().execute(statement)
    finally:
        conn.close()


def read_without_connectorx(tmp_path: Path, batch_rows: int = 300_000, **config) -> tuple[int, pl.DataFrame]:
    out = tmp_path / f"{uuid.uuid4().hex}.arrow"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(REPO),
            json.dumps({**BASE, **config}),
            str(out),
            str(tmp_path),
            str(batch_rows),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1]), pl.read_ipc(out)


@pytest.fixture
def table():
    require_service("mariadb")
    name = "t_nocx_" + uuid.uuid4().hex[:10]
    yield name
    sql(f"DROP TABLE IF EXISTS `{name}`")


def test_every_common_type_reads_as_with_connectorx(tmp_path, table):
    sql(
        f"CREATE TABLE `{table}` (id BIGINT, small SMALLINT, i INT, value DOUBLE, name LONGTEXT,"
        " flag BOOLEAN, ts DATETIME(6), day DATE, blob_ LONGBLOB, price DECIMAL(10,2), t TIME(6))"
    )
    sql(
        f"INSERT INTO `{table}` VALUES"
        " (1, 1, 10, 0.5, 'a', TRUE, '2024-05-01 12:30:15.123456', '2024-01-02', x'00012c220a', 1.25, '01:02:03.5'),"
        " (2, NULL, 20, NULL, 'it''s \"q\"\\nline \\\\ x', FALSE, NULL, NULL, NULL, NULL, NULL),"
        " (3, -3, NULL, -1e300, NULL, NULL, '2035-01-01 00:00:00', '1970-01-01', 'zz', -3.50, '23:59:59')"
    )
    _, without = read_without_connectorx(tmp_path, table=table)
    with_cx = nodes.read_all(nodes.source("mysql", nodes.run_context(tmp_path), {**BASE, "table": table}))
    without, with_cx = without.sort("id"), with_cx.sort("id")
    assert without.columns == with_cx.columns
    assert without["id"].to_list() == [1, 2, 3]
    assert without["name"].to_list() == ["a", 'it\'s "q"\nline \\ x', None]
    assert without["ts"].to_list() == [
        dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
        None,
        dt.datetime(2035, 1, 1),
    ]
    assert without["day"].to_list() == [dt.date(2024, 1, 2), None, dt.date(1970, 1, 1)]
    assert without["blob_"].to_list() == [b'\x00\x01,"\n', None, b"zz"]
    assert without["price"].to_list() == [decimal.Decimal("1.25"), None, decimal.Decimal("-3.50")]
    for column in ("id", "small", "i", "value", "name", "ts", "day", "blob_"):
        assert without[column].to_list() == with_cx[column].to_list(), column
    for column in ("value", "name", "ts", "day", "blob_"):
        assert without.schema[column] == with_cx.schema[column], column
    assert isinstance(without.schema["price"], pl.Decimal) and without.schema["id"] == pl.Int64
    assert without["t"].to_list() == [
        dt.timedelta(hours=1, minutes=2, seconds=3.5),
        None,
        dt.timedelta(hours=24) - dt.timedelta(seconds=1),
    ]
    assert [None if v is None else bool(v) for v in without["flag"].to_list()] == [True, False, None]
    assert [None if v is None else bool(v) for v in with_cx["flag"].to_list()] == [True, False, None]


def test_streams_in_batches(tmp_path, table):
    sql(f"CREATE TABLE `{table}` (id BIGINT, h VARCHAR(40))")
    sql(f"INSERT INTO `{table}` SELECT seq, md5(seq) FROM seq_1_to_25000")
    batches, frame = read_without_connectorx(tmp_path, batch_rows=10_000, table=table)
    assert batches >= 3  # 10,000 rows a batch, not the whole result at once
    assert frame.height == 25_000 and frame["id"].sort().to_list() == list(range(1, 25_001))


def test_no_rows_still_gives_the_columns(tmp_path, table):
    sql(f"CREATE TABLE `{table}` (id BIGINT, name TEXT)")
    _, frame = read_without_connectorx(tmp_path, table=table)
    assert frame.height == 0 and frame.schema == pl.Schema({"id": pl.Int64, "name": pl.String})


def test_a_first_batch_of_nulls_keeps_the_later_values(tmp_path, table):
    """Types come from the result's fields, not from the first batch's values (all NULL here)."""
    sql(f"CREATE TABLE `{table}` (id BIGINT, note TEXT, at DATETIME, n INT UNSIGNED)")
    sql(f"INSERT INTO `{table}` SELECT seq, NULL, NULL, NULL FROM seq_1_to_100")
    sql(f"INSERT INTO `{table}` SELECT seq, 'x', '2024-01-02 03:04:05', seq FROM seq_101_to_150")
    batches, frame = read_without_connectorx(
        tmp_path, batch_rows=100, query=f"SELECT * FROM `{table}` ORDER BY id"
    )
    assert batches == 2
    assert frame.schema == pl.Schema(
        {"id": pl.Int64, "note": pl.String, "at": pl.Datetime("us"), "n": pl.Int64}
    )
    later = frame.filter(pl.col("id") > 100)
    assert later["note"].to_list() == ["x"] * 50 and later["n"].to_list() == list(range(101, 151))
    assert later["at"].to_list() == [dt.datetime(2024, 1, 2, 3, 4, 5)] * 50
