"""A one-shot run's rejects as a Parquet file (issue 12, engine/store/historian.py `RejectFile`):
written beside the historian without opening DuckDB, published by the run's commit, folded into the
`_rejects` table by the next process that opens the historian or reads the rejects, and never lost
or counted twice when a process is killed (real SIGKILLed subprocesses) between the steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl

from engine.api.local import LocalEngine
from engine.store.historian import REJECT_FILES_DIR, Historian, RejectFile, RejectWriter

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["run_id", "pipeline", "node_id", "reason", "record"]


def rejected(n: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "order_id": list(range(start, start + n)),
            "customer_email": [f"user{i}@" for i in range(start, start + n)],
            "price": [float(i) / 4 for i in range(start, start + n)],
            "day": pl.date_range(pl.date(2026, 1, 1), pl.date(2026, 1, 1), eager=True).extend_constant(
                None, n - 1
            ),
            "_reject_reason": ["customer_email: not an email"] * n,
        }
    )


def published(historian: Historian, run_id: str, batches: list[pl.DataFrame]) -> RejectFile:
    writer = RejectFile(historian, run_id=run_id, pipeline="orders")
    writer.open()
    for frame in batches:
        writer.write(("check_email", frame))
    writer.flush()
    writer.publish()
    writer.finalize()
    return writer


def table_rows(path: Path) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            "SELECT run_id, pipeline, node_id, reason, record::VARCHAR FROM _rejects ORDER BY run_id, record"
        ).fetchall()
    finally:
        con.close()


def test_a_reject_file_reads_as_the_table_would_and_is_folded_once(tmp_path):
    """The same rejects through RejectWriter (the table) and RejectFile (a file, folded on read)
    read back alike; the file is gone once folded, and a second read counts them once."""
    frame = rejected(3)
    by_table = Historian(tmp_path / "a" / "historian.duckdb")
    writer = RejectWriter(by_table, run_id="run-1", pipeline="orders")
    writer.open()
    writer.write(("check_email", frame))
    writer.close()
    expected = by_table.rejects("run-1").select(COLUMNS).sort("record")
    by_table.close()

    historian = Historian(tmp_path / "b" / "historian.duckdb")
    writer = published(historian, "run-1", [frame])
    assert writer.target == tmp_path / "b" / REJECT_FILES_DIR / "run-1.parquet"
    assert writer.target.is_file() and not historian.path.exists()  # DuckDB not opened to write them
    assert historian.pending_reject_files() == [writer.target]
    try:
        got = historian.rejects("run-1")
        assert got.select(COLUMNS).sort("record").equals(expected)
        assert got.get_column("rejected_at").null_count() == 0
        assert historian.pending_reject_files() == [] and not writer.target.exists()
        assert historian.rejects().height == 3  # folded once
    finally:
        historian.close()
    assert len(table_rows(historian.path)) == 3


def test_an_ordinary_open_of_the_historian_folds_the_files(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    published(historian, "run-1", [rejected(2)])
    published(historian, "run-2", [rejected(1)])
    historian.cursor().close()  # e.g. a DuckDB destination, the tag historian, a service's start
    historian.close()
    assert historian.pending_reject_files() == []
    assert [r[0] for r in table_rows(historian.path)] == ["run-1", "run-1", "run-2"]


def test_rows_past_the_spill_size_are_joined_into_one_file(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    writer = RejectFile(historian, run_id="run-1", pipeline="orders")
    writer.SPILL_ROWS = 5  # type: ignore[misc]
    writer.open()
    for i in range(4):
        writer.write(("check_email", rejected(3, start=3 * i)))
    writer.flush()
    writer.publish()
    assert [p.name for p in historian.reject_folder.iterdir()] == ["run-1.parquet"]  # parts removed
    try:
        records = historian.rejects("run-1").get_column("record").to_list()
    finally:
        historian.close()
    assert sorted(json.loads(r)["order_id"] for r in records) == list(range(12))


def test_an_aborted_or_unpublished_run_leaves_no_rejects(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    writer = RejectFile(historian, run_id="run-1", pipeline="orders")
    writer.SPILL_ROWS = 2  # type: ignore[misc]
    writer.open()
    writer.write(("check_email", rejected(3)))
    writer.write(("check_email", rejected(1)))
    writer.flush()
    writer.abort()
    assert list(historian.reject_folder.iterdir()) == []
    other = RejectFile(historian, run_id="run-2", pipeline="orders")
    other.write(("check_email", rejected(1)))
    other.flush()
    other.publish()
    assert other.target.is_file()
    other.unpublish()  # another destination's commit failed: the run's rejects are taken back
    assert list(historian.reject_folder.iterdir()) == []
    try:
        assert historian.rejects().height == 0
    finally:
        historian.close()


def _killed(tmp_path: Path, script: str) -> None:
    """Run `script` in a real subprocess until it prints READY, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "historian.duckdb")],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "READY", line + proc.stderr.read()  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


WRITE = """
import sys
import polars as pl
from engine.store.historian import Historian, RejectFile
historian = Historian(sys.argv[1])
writer = RejectFile(historian, run_id="run-1", pipeline="orders")
writer.write(("check_email", pl.DataFrame({"id": [1, 2], "_reject_reason": ["bad", "worse"]})))
writer.flush()
{step}
print("READY", flush=True)
sys.stdin.read()
"""


def test_killed_after_writing_before_the_commit_nothing_is_visible(tmp_path):
    _killed(tmp_path, WRITE.replace("{step}", "pass"))
    historian = Historian(tmp_path / "historian.duckdb")
    assert historian.pending_reject_files() == []
    [temp] = list(historian.reject_folder.iterdir())  # the run's leftover (recovery removes it)
    assert temp.name.startswith(".run-1.parquet.tmp-")
    try:
        assert historian.rejects().height == 0
    finally:
        historian.close()


def test_killed_after_the_commit_before_any_fold_the_rejects_are_kept(tmp_path):
    _killed(tmp_path, WRITE.replace("{step}", "writer.publish()"))
    historian = Historian(tmp_path / "historian.duckdb")
    try:
        assert sorted(historian.rejects("run-1").get_column("reason")) == ["bad", "worse"]
    finally:
        historian.close()
    assert historian.pending_reject_files() == []


FOLD = """
import sys
from engine.store.historian import Historian
historian = Historian(sys.argv[1])
cur = historian.cursor(small_writes=True)  # open without folding, then fold one file by hand
path = historian.pending_reject_files()[0]  # run-1
historian._fold_one(cur, path)  # committed; the file is still there
print("READY", flush=True)
sys.stdin.read()
"""


def test_killed_between_the_fold_and_the_removal_of_the_file_nothing_is_counted_twice(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    published(historian, "run-1", [rejected(3)])
    published(historian, "run-2", [rejected(2)])
    _killed(tmp_path, FOLD)
    assert len(historian.pending_reject_files()) == 2  # run-1 folded and committed, its file kept
    assert [r[0] for r in table_rows(historian.path)] == ["run-1"] * 3
    try:
        got = historian.rejects()
    finally:
        historian.close()
    assert sorted(got.get_column("run_id")) == ["run-1"] * 3 + ["run-2"] * 2
    assert historian.pending_reject_files() == []


def _one_shot_run(tmp_path: Path, data: Path, name: str, *, rejects: bool) -> str:
    """A real `aggregator run` (file -> file) in a process of its own, in folder `name`; with
    `rejects`, an e-mail check rejects two of its three rows. Answers the run id."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "in.csv").write_text("id,email\n0,a@example.com\n1,not an address\n2,also bad\n")
    checks = [{"type": "field_validation", "field_name": "email", "validation_type": "email_format"}]
    doc = {
        "name": "checked" if rejects else "plain",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv"}}],
        "transformations": checks if rejects else [],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
    }
    spec = folder / "p.json"
    spec.write_text(json.dumps(doc))
    env = {**os.environ, "AGGREGATOR_ALLOWED_ROOTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", str(spec), "--data-dir", str(data), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["run_id"]


def _run_with_rejects(tmp_path: Path, data: Path, name: str) -> str:
    return _one_shot_run(tmp_path, data, name, rejects=True)


def test_a_run_detail_reads_rejects_written_while_the_engine_had_the_historian_open(tmp_path):
    """A service holds the historian; a one-shot run in another process writes its rejects as a
    file (it could not have opened the historian); the run's detail shows them."""
    data = tmp_path / "data"
    first = _run_with_rejects(tmp_path, data, "first")
    engine = LocalEngine(data)
    try:
        assert engine.runs.detail(first)["rejects"].height == 2  # folded on read
        second = _run_with_rejects(tmp_path, data, "second")  # the historian is open here meanwhile
        assert engine.workspace.historian.pending_reject_files() != []
        rejects = engine.runs.detail(second)["rejects"]
        assert sorted(rejects.get_column("record").map_elements(lambda r: json.loads(r)["id"], pl.Int64)) == [
            1,
            2,
        ]
    finally:
        engine.close()


def test_the_run_detail_of_an_empty_historian_sees_a_file_that_comes_later(tmp_path):
    """The run detail's shortcut for "no rejects table" (engine/api/runs.py) looks for files."""
    data = tmp_path / "data"
    engine = LocalEngine(data)
    try:
        for name in ("plain1", "plain2"):
            assert (
                engine.runs.detail(_one_shot_run(tmp_path, data, name, rejects=False))["rejects"].height == 0
            )
        run_id = _run_with_rejects(tmp_path, data, "later")
        assert engine.runs.detail(run_id)["rejects"].height == 2
    finally:
        engine.close()


def test_pieces_of_several_nodes_and_shapes_are_all_kept(tmp_path):
    """The rejects are encoded one frame per node and shape (`_reject_table`): pieces of two
    nodes, interleaved, one of them in two shapes, all come back with their node and reason."""
    historian = Historian(tmp_path / "historian.duckdb")
    writer = RejectFile(historian, run_id="run-1", pipeline="orders")
    pieces = [
        ("check_email", rejected(2, start=0)),
        ("check_price", pl.DataFrame({"price": [-1.0], "_reject_reason": ["price: below 0"]})),
        ("check_email", rejected(3, start=2)),
        ("check_email", pl.DataFrame({"order_id": [9], "_reject_reason": ["customer_email: missing"]})),
        ("check_price", pl.DataFrame({"price": [-2.0], "_reject_reason": ["price: below 0"]})),
    ]
    for piece in pieces:
        writer.write(piece)
    writer.flush()
    writer.publish()
    try:
        got = historian.rejects("run-1")
    finally:
        historian.close()
    rows = sorted(
        (n, r, json.dumps(json.loads(rec), sort_keys=True))
        for n, r, rec in got.select("node_id", "reason", "record").rows()
    )
    expected = sorted(
        (node, reason, json.dumps(record, sort_keys=True))
        for node, frame in pieces
        for reason, record in zip(
            frame.get_column("_reject_reason"),
            frame.drop("_reject_reason").with_columns(pl.col(pl.Date).dt.to_string("%Y-%m-%d")).to_dicts(),
            strict=True,
        )
    )
    assert rows == expected


def test_a_killed_runs_hidden_reject_files_are_removed_by_the_next_start_up(tmp_path):
    """A real `aggregator run` whose rejects spill to hidden part files is SIGKILLed: the next
    opening of the data directory marks the run interrupted and removes its reject files (they
    were recorded with the run before they were created), and no rejects of it are visible."""
    from engine.workspace import Workspace

    rows = 1_500_000  # all rejected: ~15 part files of 100,000, 55 MB (the one-query path)
    ids = pl.int_range(rows, eager=True).alias("id")
    pl.DataFrame(ids).with_columns(email=pl.lit("not-an-address-at-all")).write_csv(tmp_path / "in.csv")
    spec = tmp_path / "p.json"
    spec.write_text(
        json.dumps(
            {
                "name": "all bad",
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run", str(spec), "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    folder = data / REJECT_FILES_DIR
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".") for p in _listing(folder)):
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no reject part file within 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any(p.name.startswith(".") for p in _listing(folder))
    with Workspace(data) as ws:
        [run] = ws.recovered
        assert run["status"] == "interrupted"
        assert _listing(folder) == []  # every hidden file of the run removed; nothing published
        assert ws.historian.rejects().height == 0


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []
