"""User code: `sql` (DuckDB over the input) and `python` (a trusted plugin function)."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field, field_validator

from engine.context import NodeContext
from engine.errors import TransformError, first_line
from engine.sql_sandbox import (
    SqlRefused,
    SqlSyntaxError,
    check_statement,
    is_refused_access,
    run_query,
)
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.registry import register

INPUT_TABLE = "input"


class SqlConfig(TransformConfig):
    type: Literal["sql"] = "sql"
    query: str = Field(
        min_length=1,
        description="one DuckDB query (SELECT, WITH, VALUES or FROM) over the table `input`, e.g."
        " `SELECT * FROM input`; it cannot read or write files",
    )

    @field_validator("query")
    @classmethod
    def _one_query(cls, query: str) -> str:
        # Refused kinds (COPY, ATTACH, INSTALL, SET...) fail validation; a syntax error is left to the
        # run, which reports it with DuckDB's own words and position.
        try:
            check_statement(query)
        except SqlSyntaxError:
            return query
        except SqlRefused as exc:
            raise ValueError(str(exc)) from None
        return query


@register
class Sql(Transform):
    """Run a DuckDB query over the input (named `input`); the result is the output."""

    type = "sql"
    title = "SQL"
    category = "code"
    Config = SqlConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        query: str = self.config.query  # type: ignore[attr-defined]
        lf = inputs[0]
        # Running the query on an empty input gives the output schema now (and any syntax or binder
        # error), so the plan stays lazy and downstream nodes can check their fields against it.
        schema = run_sql(query, lf.clear().collect()).schema
        return {OUT: lf.map_batches(lambda frame: run_sql(query, frame), schema=schema)}


def run_sql(query: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`query` over `frame` (the table `input`) in the SQL sandbox (engine/sql_sandbox.py)."""
    import duckdb

    try:
        table = run_query(query, {INPUT_TABLE: frame.to_arrow()})
    except SqlRefused as exc:
        raise TransformError(f"SQL: {exc}", param="query") from None
    except duckdb.Error as exc:
        line = first_line(exc)
        if is_refused_access(exc):
            line = f"files, network and extensions are not reachable from a sql transform ({line})"
        raise TransformError(f"SQL: {line}", param="query") from None
    result = pl.from_arrow(table)
    assert isinstance(result, pl.DataFrame)
    return _plain_integers(result)


def _plain_integers(frame: pl.DataFrame) -> pl.DataFrame:
    # DuckDB's SUM/COUNT over integers return HUGEINT, which arrives as Decimal(38, 0); an integer column
    # is what the user expects (and what JSON and Parquet writers handle everywhere).
    wide = [n for n, t in frame.schema.items() if isinstance(t, pl.Decimal) and t.scale == 0]
    return frame.with_columns(pl.col(wide).cast(pl.Int64, strict=False)) if wide else frame


_FUNCTION_REF = r"^[A-Za-z_]\w*:[A-Za-z_]\w*$"


class PythonConfig(TransformConfig):
    type: Literal["python"] = "python"
    function: str = Field(
        description="`module:function` from the plugins folder; takes and returns a Polars DataFrame.",
        json_schema_extra={"pattern": _FUNCTION_REF},
    )

    @field_validator("function")
    @classmethod
    def _module_colon_function(cls, ref: str) -> str:
        if not re.match(_FUNCTION_REF, ref):
            raise ValueError(
                "function must be 'module:function' (a plugins/<module>.py file and its function)"
            )
        return ref


@register
class Python(Transform):
    """Call a trusted plugin function `module:function` from the data directory's plugins folder."""

    type = "python"
    title = "Python"
    category = "code"
    Config = PythonConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        ref: str = self.config.function  # type: ignore[attr-defined]
        function = load_plugin(ref, Path(ctx.plugins_dir))
        # The output schema is only known by running the function, so it runs here, once, on all rows.
        try:
            result = function(inputs[0].collect())
        except TransformError:
            raise
        except Exception as exc:
            raise TransformError(f"python function {ref} failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(result, pl.LazyFrame):
            return {OUT: result}
        if not isinstance(result, pl.DataFrame):
            raise TransformError(
                f"{ref} returned {type(result).__name__}, not a Polars DataFrame", param="function"
            )
        return {OUT: result.lazy()}


def load_plugin(ref: str, plugins_dir: Path) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Import `module` from `plugins_dir` only (never from sys.path) and return its `function`;
    only once an admin has enabled plugins (validation says so too; this holds for any caller)."""
    from engine.spec.paths_policy import PLUGINS_OFF, plugins_enabled

    if not plugins_enabled():
        raise TransformError(
            PLUGINS_OFF.format(what="python transforms and custom connectors"), param="function"
        )
    module_name, function_name = ref.split(":")
    path = plugins_dir / f"{module_name}.py"
    if not path.is_file():
        raise TransformError(f"plugin module '{module_name}.py' not found in {plugins_dir}", param="function")
    qualified = f"aggregator_plugins.{module_name}"
    spec = importlib.util.spec_from_file_location(qualified, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # lets dataclasses and pickling inside the plugin find their module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(qualified, None)
        raise TransformError(f"plugin {path} failed to load: {exc}", param="function") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise TransformError(f"plugin {path} has no function '{function_name}'", param="function")
    return function
