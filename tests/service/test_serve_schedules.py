"""A real `aggregator serve` runs the pipelines of `--pipelines` on their schedules and follows the
folder: interval, a file added / changed / deleted while it runs, file_arrival with a settle time,
manual never on its own."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.service.conftest import wait_for


def _pipeline(name: str, schedule: dict, source: str, target: str) -> dict:
    return {
        "name": name,
        "sources": [{"name": "input", "connector_type": "file", "config": {"path": source, "format": "csv"}}],
        "destinations": [
            {
                "name": "output",
                "connector_type": "file",
                "config": {"path": target, "format": "csv", "mode": "overwrite"},
            }
        ],
        "schedule": schedule,
    }


def _write(folder: Path, name: str, doc: dict) -> Path:
    path = folder / f"{name}.json"
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(path)  # a whole file appears at once, as an editor's save does
    return path


def test_interval_pipelines_run_and_the_folder_is_followed(serve, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (tmp_path / "in.csv").write_text("a,b\n1,2\n3,4\n", encoding="utf-8")
    _write(
        folder,
        "ticker",
        _pipeline("ticker", {"type": "interval", "seconds": 1}, "../in.csv", "../out/ticker.csv"),
    )
    _write(folder, "by_hand", _pipeline("by_hand", {"type": "manual"}, "../in.csv", "../out/by_hand.csv"))
    sp = serve("--pipelines", str(folder))
    wait_for(
        lambda: len([r for r in sp.runs("ticker") if r["status"] == "success"]) >= 2,
        30,
        what="two interval runs",
    )
    assert {r["trigger"] for r in sp.runs("ticker")} == {"interval"}
    assert (tmp_path / "out" / "ticker.csv").read_text().splitlines() == ["a,b", "1,2", "3,4"]
    assert "schedule fired: 'ticker'" in sp.output()

    # added while serving
    _write(
        folder, "late", _pipeline("late", {"type": "interval", "seconds": 1}, "../in.csv", "../out/late.csv")
    )
    wait_for(lambda: sp.runs("late"), 30, what="the added pipeline to run")
    # changed: its new text is what runs (a new target)
    _write(
        folder, "late", _pipeline("late", {"type": "interval", "seconds": 1}, "../in.csv", "../out/late2.csv")
    )
    wait_for(lambda: (tmp_path / "out" / "late2.csv").exists(), 30, what="the changed pipeline's new target")
    assert "pipeline 'late' reloaded" in sp.output()
    # deleted: no more runs once it is said to be removed
    (folder / "late.json").unlink()
    sp.wait_output("pipeline 'late' removed")
    wait_for(lambda: all(r["status"] != "running" for r in sp.runs("late")), 30, what="its last run to end")
    count = len(sp.runs("late"))
    ticks = len(sp.runs("ticker"))
    wait_for(lambda: len(sp.runs("ticker")) >= ticks + 2, 30, what="two more runs of the other pipeline")
    assert len(sp.runs("late")) == count, "a deleted pipeline ran again"
    assert sp.runs("by_hand") == []  # manual: on request only
    assert sp.stop() == 0


def test_file_arrival_reads_a_file_only_once_it_has_settled(serve, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    doc = _pipeline(
        "drop",
        {"type": "file_arrival", "path": "../incoming/*.csv", "settle_seconds": 3.0},
        "../incoming/*.csv",
        "../out/drop.csv",
    )
    _write(folder, "drop", doc)
    (tmp_path / "incoming").mkdir()
    sp = serve("--pipelines", str(folder))
    sp.wait_output("pipeline 'drop' loaded")
    # a slow copy: 6 chunks 0.4 s apart (each gap far shorter than the 3 s settle time, so a
    # loaded machine that sleeps long still writes the next chunk in time), 2.4 s in all
    rows = [f"{i},{i * 10}" for i in range(600)]
    chunks = [
        "a,b\n" + "\n".join(rows[:100]) + "\n",
        *("\n".join(rows[k : k + 100]) + "\n" for k in range(100, 600, 100)),
    ]
    target = tmp_path / "incoming" / "batch1.csv"
    with open(target, "w", encoding="utf-8") as fh:
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            time.sleep(0.4)
            assert sp.runs("drop") == [], "the file was read before it settled"
    run = wait_for(
        lambda: [r for r in sp.runs("drop") if r["status"] not in ("running",)], 30, what="the run"
    )
    assert len(run) == 1 and run[0]["trigger"] == "file_arrival" and run[0]["status"] == "success"
    assert run[0]["rows_in"] == 600  # the whole file, not a prefix
    assert len((tmp_path / "out" / "drop.csv").read_text().splitlines()) == 601
    assert f"file arrived for 'drop': {target}" in sp.output()
    assert sp.stop() == 0
