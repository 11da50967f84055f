"""The one-query chain's rejects (engine/lazy_chain.py `_open_reject_store`): a run whose process has
not opened the historian neither imports DuckDB nor opens it; its rejects are one Parquet file in
the data directory's `rejects/` folder (`RejectFile`), which the readers fold into the `_rejects`
table. Where the historian is open already (a DuckDB destination), they go into the table. Whole
`aggregator run` processes, with the one-query path taken for small files (LAZY_MIN_BYTES = 0 in
the probe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from engine.store.historian import Historian

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import atexit, json, runpy, sys
import engine.lazy_chain as lazy_chain
lazy_chain.LAZY_MIN_BYTES = 0
taken = []
execute = lazy_chain.LazyChainExecutor.execute
def recording(self):
    result = execute(self)
    taken.append(self.took_lazy_path)
    return result
lazy_chain.LazyChainExecutor.execute = recording
atexit.register(lambda: print("SEEN " + json.dumps({"duckdb": "duckdb" in sys.modules, "lazy": taken})))
sys.argv = ["aggregator", *sys.argv[1:]]
runpy.run_module("app.cli", run_name="__main__")
"""


def _run(tmp_path: Path, emails: list[str], destination: dict | None = None) -> tuple[dict, Path]:
    (tmp_path / "in.csv").write_text("id,email\n" + "".join(f"{i},{e}\n" for i, e in enumerate(emails)))
    spec = tmp_path / "p.json"
    spec.write_text(
        json.dumps(
            {
                "name": "checked",
                "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv"}}],
                "transformations": [
                    {"type": "field_validation", "field_name": "email", "validation_type": "email_format"}
                ],
                "destinations": [
                    destination
                    or {"name": "out", "connector_type": "file", "config": {"path": "out.parquet"}}
                ],
            }
        )
    )
    data = tmp_path / "data"
    env = {**os.environ, "AGGREGATOR_ALLOWED_ROOTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "run", str(spec), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    line = next((x for x in proc.stdout.splitlines() if x.startswith("SEEN ")), None)
    assert line is not None, proc.stdout + proc.stderr
    return json.loads(line.removeprefix("SEEN ")), data


def test_a_run_without_rejects_neither_imports_duckdb_nor_writes_rejects(tmp_path):
    seen, data = _run(tmp_path, ["a@example.com", "b@example.com"])
    assert seen["lazy"] == [True]
    assert seen["duckdb"] is False
    assert not list(data.glob("*.duckdb"))
    assert not list(data.glob("rejects/*"))


def test_a_run_with_rejects_writes_them_as_a_file_without_duckdb(tmp_path):
    seen, data = _run(tmp_path, ["a@example.com", "not an address", "c@example.com"])
    assert seen["lazy"] == [True]
    assert seen["duckdb"] is False  # the rejects did not need DuckDB
    assert not list(data.glob("*.duckdb"))
    [file] = list(data.glob("rejects/*"))
    assert file.suffix == ".parquet" and not file.name.startswith(".")
    historian = Historian(data / "historian.duckdb")
    try:
        rows = historian.rejects().select("node_id", "reason", "record").rows()
    finally:
        historian.close()
    assert len(rows) == 1
    node, reason, record = rows[0]
    assert node.startswith("field_validation")
    assert "email" in reason and json.loads(record) == {"id": 1, "email": "not an address"}
    assert not file.exists()  # folded into the table by the read


def test_a_run_that_has_the_historian_open_stores_its_rejects_in_the_table(tmp_path):
    duck = {"name": "out", "connector_type": "duckdb", "config": {"table": "emails", "mode": "replace"}}
    seen, data = _run(tmp_path, ["a@example.com", "not an address", "c@example.com"], duck)
    assert seen["lazy"] == [True]
    assert not list(data.glob("rejects/*"))
    [historian] = list(data.glob("*.duckdb"))
    con = duckdb.connect(str(historian), read_only=True)
    try:
        rows = con.execute("SELECT node_id, reason, record::VARCHAR FROM _rejects").fetchall()
        kept = con.execute("SELECT count(*) FROM emails").fetchone()[0]
    finally:
        con.close()
    assert kept == 2 and len(rows) == 1
    node, reason, record = rows[0]
    assert node.startswith("field_validation")
    assert "email" in reason and json.loads(record) == {"id": 1, "email": "not an address"}
