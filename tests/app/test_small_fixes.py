"""Small fixes from the new-user trial (issue 10, item 6), each through the real command line."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import duckdb
import pytest

from app.cli import main


def write_spec(folder: Path, source_path: str, *, table: str = "t", steps: list | None = None) -> Path:
    nodes = [
        {
            "id": "s",
            "kind": "source",
            "connector_type": "file",
            "config": {"path": source_path, "format": "csv"},
        }
    ]
    last = "s"
    for i, step in enumerate(steps or []):
        nodes.append({"id": f"step{i}", "kind": "transform", "inputs": [last], "transform": step})
        last = f"step{i}"
    nodes.append(
        {
            "id": "d",
            "kind": "destination",
            "inputs": [last],
            "connector_type": "duckdb",
            "config": {"table": table},
        }
    )
    path = folder / "p.json"
    path.write_text(json.dumps({"name": "p", "nodes": nodes}))
    return path


def tables(data_dir: Path) -> set[str]:
    path = data_dir / "historian.duckdb"
    if not path.exists():
        return set()
    with duckdb.connect(str(path), read_only=True) as con:
        return {row[0] for row in con.sql("SHOW TABLES").fetchall()}


NUMERIC_STEPS = [
    {"type": "record_filter", "condition": {"field": "price", "operator": "gt", "value": 1}},
    {
        "type": "field_calculation",
        "field_name": "total",
        "operation": "multiply",
        "parameters": {"source_fields": ["price", "quantity"], "output_field": "total"},
    },
]


# ---- a header-only CSV is a source with zero rows --------------------------------------------------
def test_header_only_csv_is_a_valid_source_with_zero_rows(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # relative paths are the spec folder's, wherever validate runs
    (tmp_path / "orders.csv").write_text("order_id,price,quantity\n")
    spec = write_spec(tmp_path, "orders.csv", steps=NUMERIC_STEPS)  # numeric steps on untyped columns

    assert main(["validate", str(spec)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "SUCCESS" in out and "rows in 0" in out


def test_header_only_csv_still_checks_column_names(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # relative paths are the spec folder's, wherever validate runs
    (tmp_path / "orders.csv").write_text("order_id,price,quantity\n")
    steps = [{"type": "record_filter", "condition": {"field": "nope", "operator": "gt", "value": 1}}]
    spec = write_spec(tmp_path, "orders.csv", steps=steps)
    assert main(["validate", str(spec)]) == 2
    assert "nope" in capsys.readouterr().err


# ---- --version -------------------------------------------------------------------------------------
def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    # issue 15: the build's git commit follows the version (tests/packaging/test_version.py checks it)
    assert capsys.readouterr().out.strip().startswith(f"aggregator {version('data-aggregator')} (commit ")


def test_version_of_the_console_script():
    exe = Path(sys.executable).with_name("aggregator")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.strip().startswith(f"aggregator {version('data-aggregator')} (commit ")


# ---- --debug in any position -----------------------------------------------------------------------
@pytest.mark.parametrize("where", ["first", "last", "middle"])
def test_debug_works_in_any_position(tmp_path, capsys, where):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "nodes": [{"id": "s", "kind": "source"}]}))
    argv = {
        "first": ["--debug", "validate", str(bad)],
        "last": ["validate", str(bad), "--debug"],
        "middle": ["validate", "--debug", str(bad)],
    }[where]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err  # the traceback --debug promises
    assert "error: " in err.splitlines()[-1]


def test_debug_after_double_dash_is_an_argument(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `--` ends the options: "--debug" is the spec's file name
    assert main(["validate", "--", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--debug" in err


# ---- an environment problem is one line, not an internal error -------------------------------------
def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "internal error" not in lines[0], lines[0]
    return lines[0]


def test_data_directory_that_cannot_be_made_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["runs", "--data-dir", str(blocker / "data")]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert str(blocker) in line


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nothing can be written in: a read-only tmpfs as root (permissions do not bind
    root), else a folder without write permission."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_read_only_data_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "orders.csv").write_text("order_id,price\n1,2.5\n")
    spec = write_spec(tmp_path, "orders.csv")
    with read_only_folder(tmp_path / "ro") as ro:
        assert main(["run", str(spec), "--data-dir", str(ro)]) == 1
        line = _one_line_error(capsys.readouterr().err)
        assert str(ro) in line and ("Read-only" in line or "Permission denied" in line)


def test_historian_held_by_another_process_is_one_line_naming_it(tmp_path, data_dir, capsys):
    (tmp_path / "orders.csv").write_text("order_id,price\n1,2.5\n")
    spec = write_spec(tmp_path, "orders.csv")
    data_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()",
            str(data_dir / "historian.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # the lock is taken: wait on that itself
        assert main(["run", str(spec)]) == 1
        line = _one_line_error(capsys.readouterr().err)
        assert "in use by another process" in line and f"PID {holder.pid}" in line
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# ---- a folder given as a source file ---------------------------------------------------------------
def test_folder_as_source_file_says_so(tmp_path, data_dir, capsys):
    (tmp_path / "exports").mkdir()
    spec = write_spec(tmp_path, "exports")
    assert main(["run", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'exports'} is a folder, not a file" in err
    assert "not found" not in err


# ---- runs --status bogus ---------------------------------------------------------------------------
def test_runs_with_an_unknown_status_is_a_usage_error(data_dir, capsys):
    with pytest.raises(SystemExit) as done:
        main(["runs", "--status", "bogus"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and "success" in err


# ---- a zero-row source does not claim it wrote -----------------------------------------------------
def test_zero_row_source_does_not_print_wrote_for_a_table_it_did_not_make(tmp_path, data_dir, capsys):
    (tmp_path / "empty.csv").write_bytes(b"")
    spec = write_spec(tmp_path, "empty.csv", table="never_made")
    assert main(["run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "never_made" not in tables(data_dir)
    assert "wrote d" not in out
    assert "d: no rows to write" in out


def test_rows_still_print_wrote(tmp_path, data_dir, capsys):
    (tmp_path / "orders.csv").write_text("order_id,price\n1,2.5\n")
    spec = write_spec(tmp_path, "orders.csv", table="made")
    assert main(["run", str(spec)]) == 0
    assert "wrote d -> historian.duckdb:made" in capsys.readouterr().out
    assert "made" in tables(data_dir)
