"""The `sql` transform's sandbox (issue 9, C12): a spec's query cannot read or write files, attach
databases, install extensions or change settings, in `run` and in `preview` alike; each attempt is
one error line and has no effect. Ordinary queries over the input still work, and the input still
reaches DuckDB as a registered Arrow table (scanned in place)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from app.cli import main
from engine.sql_sandbox import SqlRefused, check_statement, run_query, sandbox_connection

OUTSIDE = "CONFIDENTIAL-RECIPE-4711"  # the content of a file no spec may read


@pytest.fixture
def plant(tmp_path, monkeypatch):
    """A data directory holding a secret in the encrypted file (so the key and the file exist), a
    file outside it, and an orders CSV for the pipeline."""
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    data = tmp_path / "data"
    from engine.workspace import Workspace

    with Workspace(data) as ws:
        ws.secrets.set("db_password", "hunter2-correct-horse", use_keyring=False)
        key_file = ws.secrets.key_file
    (tmp_path / "outside.csv").write_text(f"secret\n{OUTSIDE}\n")
    (tmp_path / "orders.csv").write_text("region,amount\nn,10\ns,5\nn,7\n")
    yield {"tmp": tmp_path, "data": data, "key": key_file, "enc": data / "secrets.enc"}
    keyring.set_keyring(previous)


def spec(tmp: Path, *steps: dict) -> Path:
    doc = {
        "name": "Sandboxed",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": "orders.csv"}}],
        "transformations": list(steps),
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
    }
    path = tmp / "pipeline.json"
    path.write_text(json.dumps(doc))
    return path


def cli(capsys, command: str, spec_path: Path, data: Path) -> tuple[int, str, str]:
    where = [] if command == "validate" else ["--data-dir", str(data)]
    code = main([command, str(spec_path), *where])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return lines[0]


# Queries that parse as SELECT, so only the sandboxed DuckDB itself can stop them (at run time).
READS = {
    "read_csv": "SELECT * FROM read_csv('{tmp}/outside.csv')",
    "replacement scan": "SELECT * FROM '{tmp}/outside.csv'",
    "read_text of the key": "SELECT content AS secret FROM read_text('{key}')",
    "read_blob of the secrets": "SELECT content AS secret FROM read_blob('{enc}')",
    "glob": "SELECT file AS secret FROM glob('{tmp}/*')",
}


@pytest.mark.parametrize("command", ["run", "preview"])
@pytest.mark.parametrize("query", READS.values(), ids=READS.keys())
def test_file_reads_fail_with_one_line_and_read_nothing(plant, capsys, command, query):
    tmp = plant["tmp"]
    steps = {"type": "sql", "query": query.format(**plant)}
    code, out, err = cli(capsys, command, spec(tmp, steps), plant["data"])
    line = error_line(err)
    assert code == 1 and "not reachable from a sql transform" in line, line
    everything = out + err
    assert OUTSIDE not in everything
    assert plant["key"].read_text() not in everything
    assert not (tmp / "out.csv").exists()


# Statements that are not a query: refused when the spec is validated, before anything runs.
WRITES = {
    "copy into plugins": "COPY (SELECT 'x' AS code) TO '{data}/plugins/evil.py' (HEADER false)",
    "copy to anywhere": "COPY (SELECT * FROM input) TO '{tmp}/stolen.csv'",
    "attach": "ATTACH '{tmp}/stolen.duckdb' AS stolen",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET enable_external_access = true",
    "export": "EXPORT DATABASE '{tmp}/exported'",
    "create": "CREATE TABLE kept AS SELECT * FROM input",
    "a second statement": "SELECT * FROM input; COPY (SELECT 1) TO '{tmp}/stolen.csv'",
}


@pytest.mark.parametrize("command", ["run", "preview", "validate"])
@pytest.mark.parametrize("query", WRITES.values(), ids=WRITES.keys())
def test_statements_that_are_not_a_query_are_spec_errors_with_no_effect(plant, capsys, command, query):
    tmp, data = plant["tmp"], plant["data"]
    steps = {"type": "sql", "query": query.format(**plant)}
    code, _, err = cli(capsys, command, spec(tmp, steps), data)
    line = error_line(err)
    assert code == 2 and "transformations[0].query" in line, line
    assert "not allowed here" in line or "one statement at a time" in line, line
    assert not (data / "plugins" / "evil.py").exists()
    for made in ("stolen.csv", "stolen.duckdb", "exported", "out.csv"):
        assert not (tmp / made).exists(), made


@pytest.mark.parametrize("command", ["run", "preview"])
def test_copy_into_plugins_then_python_node_executes_nothing(plant, capsys, command):
    """The old chain: a sql node writes plugins/evil.py, a python node then imports it."""
    tmp, data = plant["tmp"], plant["data"]
    marker = tmp / "pwned"
    # Without the sandbox this COPY writes a valid plugin (checked by hand against plain DuckDB).
    plugin = f'import pathlib; pathlib.Path({json.dumps(str(marker))}).write_text("x")'
    copy = (
        f"COPY (SELECT '{plugin}' || chr(10) || 'def run(df): return df' AS c)"
        f" TO '{data}/plugins/evil.py' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '')"
    )
    steps = [
        {"type": "sql", "query": copy},
        {"type": "python", "function": "evil:run"},
    ]
    code, _, err = cli(capsys, command, spec(tmp, *steps), data)
    assert code == 2 and "not allowed" in error_line(err)
    assert not (data / "plugins" / "evil.py").exists() and not marker.exists()


def test_the_sandbox_itself_refuses_what_the_statement_check_lets_through(tmp_path):
    """Defence in depth: on the sandboxed connection, even statements that never get past the
    statement check fail (no file written, nothing attached, no setting changed)."""
    con = sandbox_connection()
    attempts = [
        f"COPY (SELECT 1) TO '{tmp_path}/copied.csv'",
        f"ATTACH '{tmp_path}/attached.duckdb' AS a",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET autoload_known_extensions = true",
        "RESET lock_configuration",
    ]
    for statement in attempts:
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    assert list(tmp_path.iterdir()) == []
    settings = dict(
        con.sql(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access',"
            " 'lock_configuration', 'autoinstall_known_extensions', 'autoload_known_extensions')"
        ).fetchall()
    )
    assert settings == {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }


@pytest.mark.parametrize(
    "query",
    [
        "SELECT region, SUM(amount) AS total FROM input GROUP BY region ORDER BY region",
        "WITH t AS (SELECT region, amount FROM input) SELECT region, SUM(amount) AS total FROM t"
        " GROUP BY ALL ORDER BY region",
        "FROM input SELECT region, SUM(amount) AS total GROUP BY region ORDER BY region;",
    ],
    ids=["select", "with", "from-first"],
)
def test_ordinary_queries_still_run(plant, capsys, query):
    tmp = plant["tmp"]
    code, _, err = cli(capsys, "run", spec(tmp, {"type": "sql", "query": query}), plant["data"])
    assert code == 0, err
    assert pl.read_csv(tmp / "out.csv").rows() == [("n", 17), ("s", 5)]


def test_values_is_a_query():
    assert check_statement("VALUES (1, 'a'), (2, 'b')").type.name == "SELECT"
    with pytest.raises(SqlRefused, match="one statement at a time"):
        check_statement("SELECT 1; SELECT 2")


def test_the_input_is_scanned_in_place_as_arrow():
    """External access off still lets DuckDB scan a registered Arrow table: the plan reads it with
    the Arrow scan (no copy into DuckDB, no file), and the result is right."""
    frame = pl.DataFrame({"a": range(200_000)})
    table = frame.to_arrow()
    con = sandbox_connection()
    con.register("input", table)
    plan = con.sql("EXPLAIN SELECT sum(a) FROM input").fetchall()[0][1]
    assert "ARROW_SCAN" in plan, plan
    result = run_query("SELECT sum(a) AS s FROM input", {"input": table})
    assert result.column("s").to_pylist() == [frame["a"].sum()]


# ---- the same two holes through the file connector ---------------------------------------------


def test_a_file_destination_cannot_write_a_plugin(plant, capsys):
    """A destination into plugins/ followed, in a later run, by a python node was the same hole."""
    tmp, data = plant["tmp"], plant["data"]
    doc = json.loads(spec(tmp).read_text())
    doc["destinations"][0]["config"] = {"path": str(data / "plugins" / "evil.py"), "format": "csv"}
    (tmp / "pipeline.json").write_text(json.dumps(doc))
    code, _, err = cli(capsys, "run", tmp / "pipeline.json", data)
    line = error_line(err)
    assert code == 1 and "may not write into the plugins folder" in line, line
    assert not (data / "plugins" / "evil.py").exists()


@pytest.mark.parametrize("target", ["key", "enc"])
def test_a_file_source_cannot_read_the_secret_store(plant, capsys, target):
    tmp = plant["tmp"]
    doc = json.loads(spec(tmp).read_text())
    doc["sources"][0]["config"] = {"path": str(plant[target]), "format": "csv"}
    (tmp / "pipeline.json").write_text(json.dumps(doc))
    code, out, err = cli(capsys, "run", tmp / "pipeline.json", plant["data"])
    line = error_line(err)
    assert code == 1 and "the secret store's files are not readable by a pipeline" in line, line
    assert plant["key"].read_text().strip() not in out + err
    assert not (tmp / "out.csv").exists()


# ---- the Data page's console: the same statement check, and no files named in a query -----------


def test_the_data_console_shares_the_check_and_reads_no_file(tmp_path):
    from engine.api import LocalEngine
    from engine.errors import DataError

    (tmp_path / "outside.csv").write_text(f"secret\n{OUTSIDE}\n")
    engine = LocalEngine(tmp_path / "data")
    try:
        cur = engine.workspace.historian.cursor()
        cur.execute("CREATE TABLE readings AS SELECT range AS id, range * 1.5 AS v FROM range(5)")
        cur.close()
        result = engine.data.sql(
            "SELECT r.id, g.generate_series AS g FROM readings r, generate_series(1, 2) g"
        )
        assert result["rows"] == 10
        assert engine.data.sql("EXPLAIN SELECT * FROM readings")["rows"] >= 1
        refused = {
            f"SELECT * FROM read_csv('{tmp_path}/outside.csv')": "table function read_csv()",
            f"SELECT * FROM '{tmp_path}/outside.csv'": "looks like a file",
            f"SELECT (SELECT max(content) FROM read_text('{tmp_path}/outside.csv'))": "read_text()",
            f"EXPLAIN ANALYZE SELECT * FROM read_blob('{tmp_path}/outside.csv')": "read_blob()",
            "SELECT * FROM query('SELECT 1')": "table function query()",
            f"COPY readings TO '{tmp_path}/copied.csv'": "COPY statements are not allowed here",
            "SELECT 1; SELECT 2": "one statement at a time (got 2)",
        }
        for sql, fragment in refused.items():
            with pytest.raises(DataError) as err:
                engine.data.sql(sql)
            message = str(err.value)
            assert message.startswith("SQL console: ") and fragment in message, message
            assert OUTSIDE not in message and "\n" not in message
        assert not (tmp_path / "copied.csv").exists()
    finally:
        engine.close()


@pytest.mark.parametrize("command", ["run", "preview"])
def test_a_duckdb_source_query_cannot_read_files_either(plant, capsys, command):
    """A duckdb source's query runs on the historian, which keeps its file access: the query may not
    name a file (here the secrets key), through any table function or a replacement scan."""
    tmp = plant["tmp"]
    doc = json.loads(spec(tmp).read_text())
    query = f"SELECT content AS k FROM read_text('{plant['key']}')"
    doc["sources"][0] = {"name": "q", "connector_type": "duckdb", "config": {"query": query}}
    (tmp / "pipeline.json").write_text(json.dumps(doc))
    code, out, err = cli(capsys, command, tmp / "pipeline.json", plant["data"])
    line = error_line(err)
    assert code == 1 and "table function read_text() is not allowed in a duckdb source query" in line, line
    assert plant["key"].read_text().strip() not in out + err
    assert not (tmp / "out.csv").exists()
