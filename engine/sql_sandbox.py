"""SQL that someone else wrote: one statement of an allowed kind, on a DuckDB that cannot reach out.

Two callers share this module. The `sql` transform runs a spec's query over its input on a fresh
in-memory DuckDB opened by `sandbox_connection`: file system access off (no `read_csv('/etc/passwd')`,
no `COPY ... TO`, no `ATTACH`, no extension install), no extension auto-install or auto-load, and
the configuration locked so that no statement can turn any of it back on. Its inputs arrive as
registered Arrow tables, which DuckDB scans in place (no copy, and no file access needed).

SQL that runs on the historian itself (the Data page's console, a `duckdb` source's `query`) keeps
DuckDB's file access, so it shares the statement check (`check_statement`) and adds
`refuse_outside_access`, which walks DuckDB's parse tree for table functions that can read files
and for table names that are file paths. DuckDB's own parser decides in both, never a regex.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from engine.errors import first_line

# Settings fixed at connect time; `lock_configuration` (set last) then refuses any later SET.
SANDBOX_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
QUERY_KINDS = frozenset({"SELECT"})  # SELECT, WITH ..., VALUES ..., FROM ... all parse as SELECT


class SqlRefused(ValueError):
    """The text is not one statement of an allowed kind (the message is one line)."""


class SqlSyntaxError(SqlRefused):
    """DuckDB's parser could not read the text (its message, one line)."""


def statements(sql: str) -> list:
    """DuckDB's parse of `sql` into statements; a syntax error is a one-line `SqlSyntaxError`."""
    import duckdb

    try:
        return duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlSyntaxError(first_line(exc)) from None


def check_statement(
    sql: str, allowed: Collection[str] = QUERY_KINDS, what: str = "only a query: SELECT, WITH, VALUES or FROM"
) -> Any:
    """The one statement in `sql`, if its kind is in `allowed`; otherwise `SqlRefused` saying why."""
    found = statements(sql)
    if len(found) != 1:
        raise SqlRefused(f"one statement at a time (got {len(found)})")
    kind = found[0].type.name
    if kind not in allowed:
        raise SqlRefused(f"{kind} statements are not allowed here ({what})")
    return found[0]


# Table functions a query on the historian may call: none of them touches a file or the network.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "pragma_database_size",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
    }
)
_PATH_LIKE = re.compile(r"[/\\:~]|\.\w+$")  # `FROM 'x.csv'` is a replacement scan of a file


def refuse_outside_access(sql: str, what: str = "here") -> None:
    """For a query that runs where DuckDB keeps its file access (on the historian): refuse, from
    DuckDB's own parse tree, any table function other than the safe ones (`read_csv`, `read_text`,
    `glob`, `query`...) and any table named like a file (`FROM '/etc/passwd'`)."""
    import duckdb

    con = duckdb.connect(":memory:", config=SANDBOX_CONFIG)
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    except duckdb.Error as exc:
        raise SqlSyntaxError(first_line(exc)) from None
    finally:
        con.close()
    if tree.get("error"):
        raise SqlRefused(f"not a query: {tree.get('error_message', 'cannot be analysed')}")
    for kind, name in _sources(tree):
        if kind == "TABLE_FUNCTION" and name.lower() not in SAFE_TABLE_FUNCTIONS:
            raise SqlRefused(f"table function {name}() is not allowed {what} (it can read files)")
        if kind == "BASE_TABLE" and _PATH_LIKE.search(name):
            raise SqlRefused(f"'{name}' looks like a file; files are not readable {what}")


def _sources(node: Any) -> Iterator[tuple[str, str]]:
    """(kind, name) of every table function and table a parse tree reads from."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("type")
            if kind == "TABLE_FUNCTION":
                yield kind, str((item.get("function") or {}).get("function_name", "?"))
            elif kind == "BASE_TABLE":
                yield kind, str(item.get("table_name", ""))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def sandbox_connection(extra_config: Mapping[str, Any] | None = None):
    """A fresh in-memory DuckDB with no file, network or extension access, and its settings locked."""
    import duckdb

    con = duckdb.connect(":memory:", config={**SANDBOX_CONFIG, **(extra_config or {})})
    con.execute("SET enable_progress_bar = false")  # it would draw on our stdout
    con.execute("SET lock_configuration = true")
    return con


def run_query(sql: str, tables: Mapping[str, Any], extra_config: Mapping[str, Any] | None = None):
    """Run the query `sql` (checked by `check_statement`) over `tables` (name -> Arrow table) in a
    sandbox; the result as an Arrow table. DuckDB errors propagate as `duckdb.Error`."""
    statement = check_statement(sql)
    with sandbox_connection(extra_config) as con:
        for name, table in tables.items():
            con.register(name, table)  # zero-copy: DuckDB scans the Arrow buffers
        return con.sql(statement.query).to_arrow_table()


def is_refused_access(exc: BaseException) -> bool:
    """Whether a DuckDB error is the sandbox refusing a file, network or extension access."""
    import duckdb

    return isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in str(exc)
