"""sql (DuckDB) and python (plugin functions)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.transforms.catalog import build

ORDERS = pl.DataFrame({"region": ["n", "s", "n"], "amount": [10, 5, 7], "price": [1.5, 2.0, None]})


def run(step: dict, frame: pl.DataFrame, data_dir: Path | None = None) -> pl.LazyFrame:
    ctx = NodeContext(RunContext(data_dir=data_dir or Path.cwd()), "n")
    return build(step).apply([frame.lazy()], ctx)["out"]


def test_sql_over_input_with_integer_sums():
    query = "SELECT region, SUM(amount) AS total, COUNT(*) AS n FROM input GROUP BY region ORDER BY region"
    lazy = run({"type": "sql", "query": query}, ORDERS)
    assert lazy.collect_schema() == pl.Schema({"region": pl.String, "total": pl.Int64, "n": pl.Int64})
    assert lazy.collect().rows() == [("n", 17, 2), ("s", 5, 1)]


def test_sql_schema_known_before_running_on_an_empty_input():
    lazy = run({"type": "sql", "query": "SELECT amount * price AS v FROM input"}, ORDERS.clear())
    assert lazy.collect_schema() == pl.Schema({"v": pl.Float64})


@pytest.mark.parametrize(
    ("query", "fragment"),
    [("SELEC * FROM input", "Parser Error"), ("SELECT nope FROM input", "Binder Error")],
)
def test_sql_errors_are_one_line(query, fragment):
    with pytest.raises(TransformError) as err:
        run({"type": "sql", "query": query}, ORDERS)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert err.value.param == "query"


def test_sql_is_blocking():
    assert build({"type": "sql", "query": "SELECT 1"}).streaming is False


PLUGIN = """
import polars as pl

def add_vat(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns((pl.col("amount") * 1.2).alias("gross"))

def broken(df):
    raise RuntimeError("sensor table missing")

def not_a_frame(df):
    return 42
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "finance.py").write_text(PLUGIN)
    return tmp_path


def test_python_plugin_function(data_dir):
    out = run({"type": "python", "function": "finance:add_vat"}, ORDERS, data_dir).collect()
    assert out["gross"].to_list() == pytest.approx([12.0, 6.0, 8.4])
    assert build({"type": "python", "function": "finance:add_vat"}).streaming is False


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("nowhere:f", "plugin module 'nowhere.py' not found in"),
        ("finance:missing", "has no function 'missing'"),
        ("finance:not_a_frame", "returned int"),
    ],
)
def test_python_plugin_errors_name_the_plugins_folder(data_dir, ref, fragment):
    with pytest.raises(TransformError) as err:
        run({"type": "python", "function": ref}, ORDERS, data_dir)
    assert fragment in str(err.value)
    assert err.value.param == "function"


def test_python_plugin_runtime_error_is_a_transform_error(data_dir):
    with pytest.raises(TransformError, match="sensor table missing"):
        run({"type": "python", "function": "finance:broken"}, ORDERS, data_dir)


def test_python_plugin_is_never_imported_from_sys_path(data_dir):
    # `json` is importable from sys.path, but only plugins/json.py would be used.
    with pytest.raises(TransformError, match="not found"):
        run({"type": "python", "function": "json:loads"}, ORDERS, data_dir)


@pytest.mark.parametrize("ref", ["finance", "finance:add_vat:x", "../x:f", "a.b:f"])
def test_python_function_reference_format(ref):
    with pytest.raises(ValidationError) as err:
        build({"type": "python", "function": ref})
    assert "module:function" in err.value.errors()[0]["msg"]
