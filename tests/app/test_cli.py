"""The command line: behaviour, --json output and exit codes of spec section 7, and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from app.cli import main
from tests.conftest import RUN_RECORD_KEYS

ORDERS = [
    {
        "order_id": 1,
        "customer_name": "john smith",
        "customer_email": "john@example.com",
        "price": 10.0,
        "quantity": 2,
        "status": "completed",
    },
    {
        "order_id": 2,
        "customer_name": "MARY JONES",
        "customer_email": "mary@example",
        "price": 5.5,
        "quantity": 1,
        "status": "completed",
    },
    {
        "order_id": 3,
        "customer_name": "ann lee",
        "customer_email": "ann@example.com",
        "price": 3.0,
        "quantity": 4,
        "status": "cancelled",
    },
]


def spec(tmp: Path, source: dict, transformations: list | None = None, **extra) -> Path:
    doc = {
        "name": "Daily orders",
        "sources": [source],
        "transformations": transformations
        if transformations is not None
        else [
            {"type": "field_mapping", "field_name": "customer_name", "operation": "title_case"},
            {
                "type": "record_filter",
                "condition": {"field": "status", "operator": "equals", "value": "completed"},
            },
            {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"},
        ],
        "destinations": [
            {"name": "out", "connector_type": "file", "config": {"path": "out.json"}},
            {"name": "db", "connector_type": "duckdb", "config": {"table": "orders"}},
        ],
        **extra,
    }
    path = tmp / "pipeline.json"
    path.write_text(json.dumps(doc))
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def nothing_written(tmp: Path, data: Path) -> None:
    assert not (tmp / "out.json").exists()
    assert not list(tmp.glob(".out.json*")), "a temporary file was left behind"
    db = data / "historian.duckdb"
    if db.exists():
        con = duckdb.connect(str(db), read_only=True)
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        con.close()
        assert "orders" not in tables


def test_run_json_record_matches_spec(tmp_path, capsys):
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    path = spec(tmp_path, {"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}})
    code, out, err = run_cli(capsys, "run", path, "--data-dir", tmp_path / "data", "--json")
    record = json.loads(out)
    assert code == 0, err
    assert set(record) == RUN_RECORD_KEYS
    assert record["status"] == "warning"  # one invalid email was rejected
    assert (record["rows_in"], record["rows_out"], record["rows_rejected"]) == (3, 1, 1)
    assert record["nodes"]["orders"] == {**record["nodes"]["orders"], "rows_in": 0, "rows_out": 3}
    assert record["nodes"]["record_filter_2"]["rows_out"] == 2
    assert record["started_at"].endswith("Z") and record["error"] is None
    written = json.loads((tmp_path / "out.json").read_text())
    assert written == [{**ORDERS[0], "customer_name": "John Smith"}]
    con = duckdb.connect(str(tmp_path / "data" / "historian.duckdb"), read_only=True)
    assert con.execute("SELECT customer_name FROM orders").fetchall() == [("John Smith",)]
    reasons = con.execute("SELECT node_id, reason, record->>'order_id' FROM _rejects").fetchall()
    con.close()
    assert (
        reasons[0][0] == "field_validation_3" and "customer_email" in reasons[0][1] and reasons[0][2] == "2"
    )


def test_runs_history_and_human_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AGGREGATOR_HOME", str(tmp_path / "home"))
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    path = spec(tmp_path, {"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}})
    code, out, _ = run_cli(capsys, "run", path)
    assert code == 0 and "WARNING" in out and "rows in 3, out 1, rejected 1" in out
    code, out, _ = run_cli(capsys, "runs", "--json")
    runs = json.loads(out)
    assert code == 0 and len(runs) == 1 and runs[0]["pipeline"] == "Daily orders"
    assert runs[0]["nodes"]["orders"]["rows_out"] == 3
    code, out, _ = run_cli(capsys, "runs", "--pipeline", "nope")
    assert code == 0 and "no runs yet" in out


def test_preview_writes_nothing(tmp_path, capsys):
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    path = spec(tmp_path, {"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}})
    code, out, _ = run_cli(capsys, "preview", path, "--data-dir", tmp_path / "d", "--json", "--limit", "2")
    result = json.loads(out)
    assert code == 0
    assert [r["customer_name"] for r in result["nodes"]["field_mapping_1"]["ports"]["out"]["rows"]] == [
        "John Smith",
        "Mary Jones",
    ]
    rejected = result["nodes"]["field_validation_3"]["ports"]["rejected"]["rows"]
    assert rejected[0]["order_id"] == 2 and "customer_email" in rejected[0]["_reject_reason"]
    nothing_written(tmp_path, tmp_path / "d")
    code, out, err = run_cli(capsys, "preview", path, "--node", "ghost")
    assert code == 2 and "unknown node 'ghost'" in err


def test_validate_exit_codes_and_json(tmp_path, capsys):
    path = spec(tmp_path, {"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}})
    code, out, _ = run_cli(capsys, "validate", path)
    assert code == 0 and "valid" in out
    bad = spec(
        tmp_path,
        {"name": "orders", "connector_type": "file", "config": {"path": "o.json", "colour": 1}},
        [{"type": "field_mapping", "field_name": "x", "operation": "explode"}],
    )
    code, out, _ = run_cli(capsys, "validate", bad, "--json")
    report = json.loads(out)
    assert code == 2 and report["valid"] is False
    paths = {e["path"] for e in report["errors"]}
    assert paths == {"sources[0].config", "transformations[0].operation"}


def test_schema_command_prints_json_schema(capsys):
    code, out, _ = run_cli(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and "transform_join" in schema["$defs"]


BAD_INPUTS = {
    "truncated json": (
        "orders.json",
        '[{"order_id": 1, "customer_name": "a"},\n {"order_id": 2, "cust',
        {},
        1,
        [r"orders\.json", r"line 2", r"column"],
    ),
    "csv wrong types (declared schema)": (
        "orders.csv",
        "order_id,customer_name,price\n1,a,2.5\n2,b,abc\n",
        {"schema": {"price": "float"}},
        1,
        [r"orders\.csv", r"line 3", r"price"],
    ),
    "csv wrong types (inferred)": (
        "orders.csv",
        "order_id,customer_name,price\n"
        + "".join(f"{i},n{i},{i}.5\n" for i in range(300))
        + "300,late,abc\n",
        {},
        1,
        [r"orders\.csv", r"line 302", r"price"],
    ),
    "missing file": (None, None, {}, 1, [r"orders\.json", r"not found"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_data_fails_cleanly_and_writes_nothing(case, tmp_path, capsys):
    name, content, options, exit_code, patterns = BAD_INPUTS[case]
    fname = name or "orders.json"
    if content is not None:
        (tmp_path / fname).write_text(content)
    path = spec(
        tmp_path,
        {"name": "orders", "connector_type": "file", "config": {"path": fname, **options}},
        [{"type": "field_mapping", "field_name": "customer_name", "operation": "title_case"}],
    )
    code, out, err = run_cli(capsys, "run", path, "--data-dir", tmp_path / "data")
    assert code == exit_code
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1, err
    import re

    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert "Traceback" not in err + out
    nothing_written(tmp_path, tmp_path / "data")


BAD_SPECS = {
    "unknown transformation": (
        [{"type": "teleport"}],
        {},
        "transformations[0].type",
        "unknown transformation type",
    ),
    "unknown key": (
        [{"type": "sort", "fields": ["a"], "colour": "red"}],
        {},
        "transformations[0]",
        "unknown key 'colour'",
    ),
    "join on missing source": (
        [
            {
                "type": "join",
                "join_type": "inner",
                "primary_key": "a",
                "foreign_key": "b",
                "join_source": "customers",
            }
        ],
        {},
        "transformations[0].join_source",
        "unknown source 'customers'",
    ),
    "bad operation": (
        [{"type": "field_mapping", "field_name": "a", "operation": "shout"}],
        {},
        "transformations[0].operation",
        "'shout' is not allowed",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SPECS), ids=list(BAD_SPECS))
def test_bad_spec_exit_2_with_path(case, tmp_path, capsys):
    steps, extra, where, message = BAD_SPECS[case]
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    path = spec(
        tmp_path,
        {"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}},
        steps,
        **extra,
    )
    code, _, err = run_cli(capsys, "run", path, "--data-dir", tmp_path / "data")
    assert code == 2
    assert f"pipeline.json: {where}: {message}" in err
    assert "Traceback" not in err
    nothing_written(tmp_path, tmp_path / "data")


def test_installed_console_script_and_debug_flag(tmp_path):
    exe = Path(sys.executable).parent / "aggregator"
    (tmp_path / "p.json").write_text("{not json")
    proc = subprocess.run([str(exe), "validate", str(tmp_path / "p.json")], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid JSON at line 1, column 2" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [str(exe), "--debug", "validate", str(tmp_path / "p.json")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    proc = subprocess.run([str(exe), "run"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_ctrl_c_cancels_the_run_and_writes_nothing(tmp_path):
    """SIGINT during `aggregator run` ends the run as `cancelled` (exit 1), recorded, nothing written."""
    import signal
    import sqlite3
    import time

    records = "".join(
        f"<order><id>{i}</id><customer_name>n {i}</customer_name></order>" for i in range(400_000)
    )
    (tmp_path / "big.xml").write_text(
        f"<orders>{records}</orders>"
    )  # XML reads slowly: the run takes a while
    path = spec(tmp_path, {"name": "orders", "connector_type": "file", "config": {"path": "big.xml"}})
    exe = Path(sys.executable).parent / "aggregator"
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [str(exe), "run", str(path), "--data-dir", str(data), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the run is under way
        try:
            with sqlite3.connect(data / "metadata.db") as con:
                if con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 5, "cancelling took too long"
    assert proc.returncode == 1, err
    record = json.loads(out)
    assert record["status"] == "cancelled" and "Traceback" not in err
    nothing_written(tmp_path, data)
