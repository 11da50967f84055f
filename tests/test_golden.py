"""Golden cases: each folder under tests/golden/<group>/<case>/ holds a pipeline, its inputs and
the expected output. New cases need no new code.

- pipeline.json: the spec (paths relative to the case folder); its first destination is compared
- expected.<ext>: exact expected bytes of a text output (formats group)
- expected.json: expected rows (compared as data for every output format)
- expected_rejects.json: [{"reason", "record"}] kept in the reject store
- case.json: {"ignore_fields": [...], "secrets": {name: value}}
- plugins/: copied to the data directory's plugins folder
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from engine.runner import run_pipeline
from engine.spec.io import load_pipeline
from engine.workspace import Workspace

ROOT = Path(__file__).parent / "golden"
CASES = sorted(p.parent for p in ROOT.glob("*/*/pipeline.json"))
TEXT = {".csv", ".json", ".ndjson", ".jsonl", ".xml"}


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if suffix in (".ndjson", ".jsonl"):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if suffix in (".parquet", ".pq"):
        return json.loads(pl.read_parquet(path).write_json())
    if suffix in (".xlsx", ".xls"):
        return json.loads(pl.read_excel(path).write_json())
    if suffix == ".csv":
        return json.loads(pl.read_csv(path, infer_schema=False).write_json())
    raise AssertionError(f"no row reader for {path.name}")


def _drop(rows: list[dict], ignore: list[str]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ignore} for r in rows]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_golden_case(case: Path, tmp_path: Path, monkeypatch):
    work = tmp_path / "case"
    shutil.copytree(case, work, ignore=shutil.ignore_patterns("expected*", "case.json"))
    meta = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
    for name, value in meta.get("secrets", {}).items():
        monkeypatch.setenv(f"AGGREGATOR_SECRET_{name.upper()}", value)
    with Workspace(tmp_path / "data") as ws:
        if (case / "plugins").is_dir():
            shutil.copytree(case / "plugins", ws.data_dir / "plugins", dirs_exist_ok=True)
        compiled = load_pipeline(work / "pipeline.json")
        record = run_pipeline(compiled, ws, base_dir=work)
        assert record["status"] in ("success", "warning"), record["error"]
        destination = next(n for n in compiled.graph.nodes if n.kind == "destination")
        output = work / destination.config["path"]
        assert output.exists(), f"{output.name} was not written"

        exact = case / f"expected{output.suffix}"
        if case.parent.name == "formats" and output.suffix in TEXT and exact.exists():
            assert output.read_text(encoding="utf-8") == exact.read_text(encoding="utf-8")
        if (case / "expected.json").exists():
            ignore = meta.get("ignore_fields", [])
            expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
            assert _drop(_read_rows(output), ignore) == _drop(expected, ignore)
        assert exact.exists() or (case / "expected.json").exists(), "a golden case needs an expected file"

        if (case / "expected_rejects.json").exists():
            got = [
                {"reason": r["reason"], "record": json.loads(r["record"])}
                for r in ws.historian.rejects(record["run_id"]).iter_rows(named=True)
            ]
            want = json.loads((case / "expected_rejects.json").read_text(encoding="utf-8"))
            key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
            assert sorted(got, key=key) == sorted(want, key=key)
            assert record["rows_rejected"] == len(want)
