"""SQL that someone else wrote: one statement of an allowed kind, on a DuckDB that cannot reach out.

Two callers share this module. The `sql` transform runs a spec's query over its input on a fresh
in-memory DuckDB opened by `sandbox_connection`: file system access off (no `read_csv('/etc/passwd')`,
no `COPY ... TO`, no `ATTACH`, no extension install), no extension auto-install or auto-load, and
the configuration locked so that no statement can turn any of it back on. Its inputs arrive as
registered Arrow tables, which DuckDB scans in place (no copy, and no file access needed).

The Data page's console runs on the historian itself and shares the statement check
(`check_statement`): DuckDB's own parser says what kind of statement the text is, never a regex.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

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


def check_statement(sql: str, allowed: Collection[str] = QUERY_KINDS, what: str = "a query") -> Any:
    """The one statement in `sql`, if its kind is in `allowed`; otherwise `SqlRefused` saying why."""
    found = statements(sql)
    if len(found) != 1:
        raise SqlRefused(f"one statement only (got {len(found)})")
    kind = found[0].type.name
    if kind not in allowed:
        raise SqlRefused(f"{kind} statements are not allowed, only {what}")
    return found[0]


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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
