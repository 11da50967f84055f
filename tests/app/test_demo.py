"""`aggregator demo`: the e-commerce example end to end, in process and as the installed script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from app.cli import main

UNIFIED_KEYS = {
    "order_id",
    "customer_email",
    "order_date",
    "total",
    "currency",
    "status",
    "product",
    "quantity",
    "channel",
    "customer_name",
}
EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
INVALID_EMAILS = {"li.wei@example", "no-email-given", "olga.ivanova@"}
SHOPIFY_IDS = {str(i) for i in range(5001, 5009)} - {"5003", "5006"}
WOO_IDS = {f"W-10{i:02d}" for i in range(1, 8)} - {"W-1004"}


def run_demo(capsys, data_dir: Path) -> tuple[int, str, str]:
    code = main(["demo", "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def query(data_dir: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(data_dir / "historian.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")  # order_date is TIMESTAMPTZ: compare in UTC on any machine
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run shared by the checks of its outputs (run from an unrelated working folder)."""
    data = tmp_path_factory.mktemp("demo") / "data dir"  # a space in the path, on purpose
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    capture = pytest.MonkeyPatch()
    capture.chdir(elsewhere)
    try:
        code = main(["demo", "--data-dir", str(data)])
    finally:
        capture.undo()
    return code, data, elsewhere


def test_demo_exits_0_and_says_where_the_results_are(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    code, out, err = run_demo(capsys, data)
    folder = data / "demo" / "ecommerce"
    assert code == 0, err
    assert err == "" and "Traceback" not in out
    assert re.search(r'Run \S+ of "E-commerce order unification": WARNING in \d+\.\d\d s', out)
    assert "rows in 15, out 12, rejected 3" in out
    assert re.search(r"check_email\s+15\s+12\s+3\s", out)
    assert "Where the results are:" in out
    assert str(folder / "unified_orders.json") in out
    assert str(folder / "rejected_orders.json") in out
    assert f"{data / 'historian.duckdb'} (12 rows)" in out
    assert "'_rejects' (3 rows for this run" in out
    assert f"aggregator runs --data-dir {data}" in out
    # Only the data directory was touched, not the current folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_unified_orders_json(demo_run):
    code, data, elsewhere = demo_run
    assert code == 0
    assert list(elsewhere.iterdir()) == []
    rows = json.loads((data / "demo" / "ecommerce" / "unified_orders.json").read_text())
    assert len(rows) == 12
    for row in rows:
        assert set(row) == UNIFIED_KEYS, row
        assert EMAIL.match(row["customer_email"]), row["customer_email"]
        assert row["customer_email"] == row["customer_email"].strip().lower()
        assert row["customer_name"] == row["customer_name"].title() and " " in row["customer_name"]
        assert isinstance(row["total"], float) and row["total"] > 0
        assert isinstance(row["quantity"], int)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", row["order_date"]), row["order_date"]
        assert row["currency"] == "EUR"
        assert row["status"] in {"completed", "pending", "refunded", "cancelled"}
    assert {r["channel"] for r in rows} == {"shopify", "woocommerce"}
    assert {r["order_id"] for r in rows if r["channel"] == "shopify"} == SHOPIFY_IDS
    assert {r["order_id"] for r in rows if r["channel"] == "woocommerce"} == WOO_IDS
    dates = [r["order_date"] for r in rows]
    assert dates == sorted(dates)  # the pipeline sorts by order date
    by_id = {r["order_id"]: r for r in rows}
    assert by_id["5001"]["customer_email"] == "john.smith@example.com"  # was upper case
    assert by_id["5004"]["customer_email"] == "ahmed.khan@example.com"  # was padded with blanks
    assert by_id["5002"]["customer_name"] == "Maria Garcia"  # was "MARIA" "garcia"
    assert by_id["W-1003"]["customer_name"] == "Yuki Tanaka"
    assert by_id["5001"]["total"] == 59.9 and by_id["W-1006"]["total"] == 8.75
    assert by_id["W-1002"]["status"] == "pending"  # WooCommerce "processing"
    assert by_id["W-1005"]["status"] == "pending"  # "on-hold"
    assert by_id["5001"]["status"] == "completed"  # Shopify "paid"
    assert by_id["W-1001"]["order_date"].startswith("2026-03-02T08:05:00")


def test_historian_orders_table_has_the_same_rows(demo_run):
    _, data, _ = demo_run
    unified = json.loads((data / "demo" / "ecommerce" / "unified_orders.json").read_text())
    rows = query(
        data,
        "SELECT channel, order_id, customer_email, customer_name, total, status, quantity,"
        " strftime(order_date, '%Y-%m-%dT%H:%M:%S') FROM orders ORDER BY channel, order_id",
    )
    expected = sorted(
        (
            r["channel"],
            r["order_id"],
            r["customer_email"],
            r["customer_name"],
            r["total"],
            r["status"],
            r["quantity"],
            r["order_date"][:19],
        )
        for r in unified
    )
    assert rows == expected


def test_invalid_emails_are_rejected_to_file_and_reject_store(demo_run):
    _, data, _ = demo_run
    rejected = json.loads((data / "demo" / "ecommerce" / "rejected_orders.json").read_text())
    assert {r["customer_email"] for r in rejected} == INVALID_EMAILS
    assert all("customer_email" in r["_reject_reason"] for r in rejected)
    stored = query(data, "SELECT node_id, reason, record->>'customer_email', pipeline FROM _rejects")
    assert {r[2] for r in stored} == INVALID_EMAILS and len(stored) == 3
    assert {r[0] for r in stored} == {"check_email"}
    assert {r[3] for r in stored} == {"E-commerce order unification"}
    assert all("not a valid email" in r[1] for r in stored)


def test_demo_run_is_recorded(demo_run, capsys):
    _, data, _ = demo_run
    code = main(["runs", "--data-dir", str(data), "--json"])
    runs = json.loads(capsys.readouterr().out)
    assert code == 0 and len(runs) == 1
    run = runs[0]
    assert run["pipeline"] == "E-commerce order unification" and run["status"] == "warning"
    assert run["trigger"] == "demo" and (run["rows_in"], run["rows_out"], run["rows_rejected"]) == (15, 12, 3)
    assert run["nodes"]["historian"]["rows_out"] == 12


def test_demo_twice_upserts_the_same_12_orders(tmp_path, capsys):
    data = tmp_path / "data"
    assert run_demo(capsys, data)[0] == 0
    code, out, _ = run_demo(capsys, data)
    assert code == 0 and "(12 rows)" in out
    assert query(data, "SELECT count(*), count(DISTINCT (channel, order_id)) FROM orders") == [(12, 12)]
    assert query(data, "SELECT count(*) FROM _rejects") == [(6,)]  # three per run, each with its run id
    assert query(data, "SELECT count(DISTINCT run_id) FROM _rejects") == [(2,)]
    # The second run rewrote the outputs instead of appending to them.
    assert len(json.loads((data / "demo" / "ecommerce" / "unified_orders.json").read_text())) == 12
    assert len(json.loads((data / "demo" / "ecommerce" / "rejected_orders.json").read_text())) == 3


def test_demo_json_output(tmp_path, capsys):
    code = main(["demo", "--data-dir", str(tmp_path / "data"), "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["status"] == "warning"
    assert record["outputs"]["historian"] == "historian.duckdb:orders"
    assert record["outputs"]["unified_json"] == str(
        tmp_path / "data" / "demo" / "ecommerce" / "unified_orders.json"
    )


def test_installed_console_script_runs_the_demo(tmp_path):
    exe = Path(sys.executable).parent / "aggregator"
    proc = subprocess.run(
        [str(exe), "demo", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "rows in 15, out 12, rejected 3" in proc.stdout
    assert (tmp_path / "data" / "demo" / "ecommerce" / "unified_orders.json").exists()
    assert query(tmp_path / "data", "SELECT count(*) FROM orders") == [(12,)]
