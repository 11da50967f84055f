"""Start-up recovery: what a killed or crashed run left behind, found when a data directory opens.

A run records its owner process (id and start time) when it starts, and everything its destinations
are about to create (hidden temporary files beside the targets, `_stage_*` tables) before they
create it. Whoever opens the data directory next (any command, the desktop app) marks each run
still `running` or `retrying` whose owner is gone as `interrupted`, with the reason, removes the
leftovers of every run that is no longer at work, and gives the historian's unused tail back.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import process
from engine.errors import AggregatorError, first_line
from engine.runs.timefmt import now_iso

if TYPE_CHECKING:
    from engine.workspace import Workspace

log = logging.getLogger(__name__)
WRITER_SIDE_FILES = ("", ".w", ".enc")  # a temporary file and the file writers' own side files


def remove_temp(path: Path) -> None:
    """Remove a destination's temporary file and the file writers' side files beside it
    (`.w`: a CSV widened to new columns, `.enc`: a CSV re-encoded)."""
    for suffix in WRITER_SIDE_FILES:
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def recover(ws: Workspace) -> list[dict[str, Any]]:
    """Mark runs whose process is gone as `interrupted` and remove their leftovers. Returns the
    runs marked. Never fails the opening of the data directory: a problem is logged, and the
    next start-up tries again."""
    try:
        marked = _interrupt_dead_runs(ws)
        _remove_leftovers(ws)
        if marked and not ws.historian.is_open:
            # A killed run's uncommitted writes left blocks past the historian's end that no table
            # uses; give them back (a file another process has open is left as it is).
            from engine.store.historian import shrink_duckdb_file

            shrink_duckdb_file(ws.historian.path)
        return marked
    except (AggregatorError, sqlite3.Error, OSError) as exc:
        log.warning("start-up recovery of %s did not finish: %s", ws.data_dir, exc)
        return []


def reason_for(pid: int | None) -> str:
    if pid:
        return f"process {pid} ended without finishing the run (killed or crashed)"
    return "the process that started the run ended without finishing it (killed or crashed)"


def _interrupt_dead_runs(ws: Workspace) -> list[dict[str, Any]]:
    marked = []
    now = now_iso()
    for run in ws.metadata.unfinished_runs():
        pid, started = run.get("owner_pid"), run.get("owner_start")
        if pid and process.alive(pid, started):
            continue
        reason = reason_for(pid)
        if ws.metadata.interrupt_run(run["run_id"], reason, now):
            ws.metadata.log(run["run_id"], "error", f"run interrupted: {reason}")
            marked.append({**run, "status": "interrupted", "error": reason, "finished_at": now})
    return marked


def _remove_leftovers(ws: Workspace) -> None:
    leftovers = ws.metadata.leftovers(finished_only=True)
    tables: dict[str, list[dict[str, Any]]] = {}
    for item in leftovers:
        if item["kind"] == "file":
            remove_temp(Path(item["location"]))
            ws.metadata.forget_leftover(item["id"])
        elif item["kind"] == "duckdb_table":
            tables.setdefault(item["location"], []).append(item)
        else:  # unknown kind (a newer version wrote it): leave it for that version
            continue
    for location, items in tables.items():
        _drop_tables(ws, Path(location), items)


def _drop_tables(ws: Workspace, path: Path, items: list[dict[str, Any]]) -> None:
    """Drop a DuckDB file's stage tables. A file another process has open (locked) is left for a
    later start-up; a file that no longer exists has nothing to drop."""
    import duckdb

    from engine.connectors.duckdb_connector import quote

    if not path.exists():
        for item in items:
            ws.metadata.forget_leftover(item["id"])
        return
    historian = path.resolve() == ws.historian.path.resolve()
    was_open = historian and ws.historian.is_open
    try:
        if historian:
            cur = ws.historian.cursor()
            con = None
        else:
            con = duckdb.connect(str(path))
            cur = con.cursor()
    except duckdb.Error as exc:
        log.info("stage tables in %s are left for later: %s", path, first_line(exc))
        return
    try:
        for item in items:
            cur.execute(f"DROP TABLE IF EXISTS {quote(item['name'])}")
            ws.metadata.forget_leftover(item["id"])
        with contextlib.suppress(duckdb.Error):
            cur.execute("CHECKPOINT")  # the dropped tables' space is reused from now on
    finally:
        cur.close()
        if con is not None:
            con.close()
        if historian and not was_open:
            ws.historian.close()  # opened only for this: another process may want the file
