"""Start-up of the batch path (issue 12 item 3): what a file-only run imports, and the transform
registry's names against the modules that register them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.transforms import registry

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "duckdb", "pyarrow", "PySide6", "asyncua", "pymodbus")
# What a file-only batch run must not load either: sqlite-utils and numpy (the metadata store used
# sqlite-utils, which imported numpy), the streaming runner (the console lines of source sessions),
# the outbox (opened at the end of every one-shot run to look for alert notifications to wait for)
# and asyncio (the engine's loop, started with its first coroutine).
NOT_FOR_A_FILE_RUN = {
    "numpy",
    "sqlite_utils",
    "asyncio",
    "engine.streaming.run",
    "engine.streaming.runner",
    "engine.outbox.manager",
}


def test_every_builtin_type_is_registered_by_the_module_named_for_it():
    types = registry.all_types()
    assert set(types) == set(registry.BUILTIN)
    for name, cls in types.items():
        assert cls.__module__ == "engine.transforms." + registry.BUILTIN[name], name
    assert {
        alias: registry.canonical(alias) for alias in registry.BUILTIN_ALIASES
    } == registry.BUILTIN_ALIASES


def _imported_by(args: list[str], tmp_path: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages and the engine's modules `python -m app.cli ARGS` imported, and its
    result."""
    probe = (
        "import sys, runpy, atexit, json;"
        f"atexit.register(lambda: open({str(tmp_path / 'mods.json')!r}, 'w').write("
        "json.dumps(sorted({m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if m.startswith('engine.')}))));"
        "sys.argv = ['aggregator', *sys.argv[1:]];"
        "runpy.run_module('app.cli', run_name='__main__')"
    )
    env = {**os.environ, "AGGREGATOR_ALLOWED_ROOTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    return set(json.loads((tmp_path / "mods.json").read_text())), proc


def _tiny_spec(tmp_path: Path) -> Path:
    """A file-only pipeline, in.csv -> trim(email) -> out.csv, written to `tmp_path/p.json`."""
    spec = tmp_path / "p.json"
    spec.write_text(
        json.dumps(
            {
                "name": "tiny",
                "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv"}}],
                "transformations": [{"type": "field_mapping", "field_name": "email", "operation": "trim"}],
                "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
            }
        )
    )
    return spec


def test_a_csv_to_csv_run_imports_no_heavy_package(tmp_path):
    (tmp_path / "in.csv").write_text("id,email\n1,a@example.com\n2,bad\n")
    spec = _tiny_spec(tmp_path)
    modules, proc = _imported_by(["run", str(spec), "--data-dir", str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.csv").read_text().splitlines()[1:] == ["1,a@example.com", "2,bad"]
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not modules & NOT_FOR_A_FILE_RUN, sorted(modules & NOT_FOR_A_FILE_RUN)


# `--help` and `validate` budgets: what they must not import (each was imported once, ~0.15 s for
# pydantic by the settings model alone; `--help` is meant to take < 0.1 s as a whole process).
HELP_FORBIDDEN = {"polars", "numpy", "sqlite_utils", "pydantic", "pydantic_core", "tomllib", *HEAVY}


def test_help_imports_neither_polars_nor_pydantic_nor_the_stores(tmp_path):
    modules, proc = _imported_by(["--help"], tmp_path)
    assert "usage: aggregator" in proc.stdout
    assert not modules & HELP_FORBIDDEN, sorted(modules & HELP_FORBIDDEN)


def test_validate_opens_no_store_and_starts_no_engine(tmp_path):
    spec = _tiny_spec(tmp_path)
    modules, proc = _imported_by(["validate", str(spec)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    loaded = modules & (
        {"numpy", "sqlite_utils", "asyncio", *HEAVY}
        | {m for m in modules if m.startswith(("engine.store", "engine.streaming", "engine.workspace"))}
    )
    assert not loaded, sorted(loaded)
