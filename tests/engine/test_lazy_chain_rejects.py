"""The one-query chain imports the reject store's DuckDB while its query runs (engine/lazy_chain.py
`_import_reject_store`), and opens nothing until rejected rows come: a run without rejects leaves no
historian file, a run with some stores them. Whole `aggregator run` processes, with the one-query
path taken for small files (LAZY_MIN_BYTES = 0 in the probe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

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


def _run(tmp_path: Path, emails: list[str]) -> tuple[dict, Path]:
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
                    {"name": "out", "connector_type": "file", "config": {"path": "out.parquet"}}
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


def test_a_run_without_rejects_imports_duckdb_but_opens_no_historian(tmp_path):
    seen, data = _run(tmp_path, ["a@example.com", "b@example.com"])
    assert seen["lazy"] == [True]
    assert seen["duckdb"] is True  # imported ahead, on its own thread
    assert not list(data.glob("*.duckdb"))  # and nothing opened: no rejected row came


def test_a_run_with_rejects_stores_them(tmp_path):
    seen, data = _run(tmp_path, ["a@example.com", "not an address", "c@example.com"])
    assert seen["lazy"] == [True]
    [historian] = list(data.glob("*.duckdb"))
    con = duckdb.connect(str(historian), read_only=True)
    try:
        rows = con.execute("SELECT node_id, reason, record::VARCHAR FROM _rejects").fetchall()
    finally:
        con.close()
    assert len(rows) == 1
    node, reason, record = rows[0]
    assert node.startswith("field_validation")
    assert "email" in reason and json.loads(record) == {"id": 1, "email": "not an address"}
