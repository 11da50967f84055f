"""The Runs page knows `interrupted`: a run whose process was killed (a real process, ended) is
found when the app opens its data directory, listed as `interrupted` with the reason, and the
status filter offers it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import process
from engine.store.metadata import MetadataStore
from tests.ui.gestures import pick


@pytest.fixture
def engine(tmp_path):
    """A data directory holding a run left `running` by a process that has ended, then opened."""
    from engine.api import LocalEngine

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process.start_time(ended.pid)
    ended.wait()
    store = MetadataStore(tmp_path / "data" / "metadata.db")
    for run_id, status in (("20260101T000000-killed00", "running"), ("20260101T000001-fine0000", "success")):
        store.upsert_run(
            {
                "run_id": run_id,
                "pipeline": "Meters",
                "status": status,
                "started_at": f"2026-01-01T00:00:0{run_id[14]}.000000Z",
                "owner_pid": ended.pid,
                "owner_start": started,
            }
        )
    store.close()
    engine = LocalEngine(tmp_path / "data")
    engine.killed_pid = ended.pid  # type: ignore[attr-defined]
    yield engine
    engine.close()


def test_the_runs_page_lists_and_filters_interrupted_runs(qtbot, window, engine, artifacts):
    page = window.show_page("runs")
    qtbot.waitUntil(lambda: page.table.rowCount() == 2, timeout=30_000)
    window.grab().save(str(artifacts / "runs_interrupted.png"))
    statuses = {page.table.item(r, 0).text() for r in range(2)}
    assert statuses == {"interrupted", "success"}
    durations = {page.table.item(r, 0).text(): page.table.item(r, 3).text() for r in range(2)}
    assert durations["interrupted"] == "—"  # ended, when unknown: not "…" as a run still going
    items = [page.status_filter.itemText(i) for i in range(page.status_filter.count())]
    assert "interrupted" in items
    pick(qtbot, page.status_filter, "interrupted")
    qtbot.waitUntil(lambda: [r["run_id"] for r in page.records] == ["20260101T000000-killed00"])
    record = page.records[0]
    assert (
        record["error"] == f"process {engine.killed_pid} ended without finishing the run (killed or crashed)"
    )


def test_the_dashboard_counts_an_interrupted_run_as_a_failure(engine):
    from datetime import UTC, datetime

    day = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # the day both runs started
    assert engine.health.summary(now=day)["failures_today"] == 1
