"""Running from the editor (RunController) and the Runs page, on the e-commerce demo with real
runs: progress per node, the summary toast and its link, history filters, detail, re-run, streams."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDateTimeEdit

from engine.connectors import registry
from tests.engine.streaming_sources import TicksConnector
from tests.pipelines import ecommerce_folder, opcua_stream, ticks_stream
from tests.ui.gestures import pick
from ui.editor.run_controller import RunController

PIPELINE = "E-commerce order unification"


@pytest.fixture
def folder(tmp_path) -> Path:
    return ecommerce_folder(tmp_path)


@pytest.fixture
def spec(folder) -> Path:
    return folder / "ecommerce_orders.json"


@pytest.fixture
def doc(spec) -> dict:
    return json.loads(spec.read_text())


@pytest.fixture
def controller(window):
    return RunController(window.engine, window.bridge, window)


def run_and_wait(qtbot, controller, doc, spec) -> dict:
    with qtbot.waitSignal(controller.finished, timeout=30_000) as done:
        assert controller.start(doc, spec_path=spec) is not None
        assert controller.running
    return done.args[0]


def rows_of(table) -> int:
    return table.rowCount()


def ids_of(page) -> list[str]:
    return [r["run_id"] for r in page.records]


# ---- gestures (tests/ui/test_dashboard_settings.py uses them too) -----------------------------------
def type_datetime(qtbot, edit: QDateTimeEdit, moment: datetime) -> None:
    """Type a date and time into a yyyy-MM-dd HH:mm edit: select the year, type the digits (each
    full section moves on to the next)."""
    edit.setFocus()
    qtbot.keyClick(edit, Qt.Key.Key_Home)
    for _ in range(4):
        qtbot.keyClick(edit, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(edit, moment.strftime("%Y%m%d%H%M"))
    assert edit.dateTime().toPython() == moment.replace(second=0, microsecond=0)


def click_row(qtbot, page, row: int) -> None:
    rect = page.table.visualItemRect(page.table.item(row, 1))
    qtbot.mouseClick(page.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def tab_center(page, index: int):
    return page.detail_tabs.tabBar().tabRect(index).center()


def test_run_shows_progress_per_node_and_a_toast_linking_to_the_run(qtbot, window, controller, doc, spec):
    progress: list[tuple[str, dict]] = []
    controller.node_progress.connect(lambda node, stats: progress.append((node, stats)))
    edges: dict = {}
    controller.edge_counts.connect(edges.update)

    record = run_and_wait(qtbot, controller, doc, spec)

    assert (record["status"], record["rows_in"], record["rows_out"], record["rows_rejected"]) == (
        "warning", 15, 12, 3,
    )  # fmt: skip
    assert not controller.running
    assert {node for node, _ in progress} >= {"shopify", "union", "check_email", "historian"}
    assert controller.progress["check_email"]["status"] == "success"
    assert controller.progress["check_email"]["rows_rejected"] == 3
    assert controller.progress["historian"]["rows_in"] == 12
    assert edges[("union", "out")] == 15 and edges[("check_email", "rejected")] == 3
    toast = controller.last_toast
    assert toast.kind == "warning" and "15 rows in, 12 out, 3 rejected" in toast.text
    assert "Open run" in toast.text

    toast.label.linkActivated.emit("run")  # the user clicks "Open run"
    page = window.pages["runs"]
    assert window.current_page_name() == "runs"
    qtbot.waitUntil(lambda: page.detail is not None, timeout=30_000)
    assert page.selected_run_id() == record["run_id"]
    assert page.detail["record"]["run_id"] == record["run_id"]


def test_cancel_a_run(qtbot, controller, doc, spec):
    with qtbot.waitSignal(controller.finished, timeout=30_000) as done:
        controller.start(doc, spec_path=spec)
        controller.cancel()
    assert done.args[0]["status"] == "cancelled"
    assert controller.last_toast.kind == "info"
    assert not (spec.parent / "unified_orders.json").exists()


def test_a_second_start_while_running_is_refused(qtbot, controller, doc, spec):
    with qtbot.waitSignal(controller.finished, timeout=30_000):
        controller.start(doc, spec_path=spec)
        assert controller.start(doc, spec_path=spec) is None
        assert "already going" in controller.last_toast.text


def test_a_real_time_pipeline_starts_and_stops(qtbot, controller):
    registry.register(TicksConnector)
    doc = ticks_stream("ticks live", rows_per_batch=5, interval_s=0.02)
    with qtbot.waitSignal(controller.stream_stats, timeout=30_000) as stats:
        controller.start(doc)
        assert controller.streaming
    assert stats.args[0]["rows_received"] > 0
    with qtbot.waitSignal(controller.finished, timeout=30_000) as done:
        controller.stop()
    assert done.args[0]["status"] == "cancelled" and done.args[0]["rows_out"] > 0
    assert not controller.streaming


def test_runs_page_empty_state(qtbot, window, artifacts):
    page = window.show_page("runs")
    assert page.overlay.active  # the history is read in the background
    qtbot.waitUntil(lambda: not page.overlay.active, timeout=30_000)
    assert page.stack.currentWidget() is page.no_runs
    window.grab().save(str(artifacts / "runs_empty.png"))
    qtbot.mouseClick(page.no_runs.button, Qt.MouseButton.LeftButton)
    assert window.current_page_name() == "pipelines"


def test_runs_page_history_filters_detail_and_rerun(qtbot, window, controller, doc, spec, artifacts):
    good = run_and_wait(qtbot, controller, doc, spec)
    broken = json.loads(json.dumps(doc))
    broken["name"] = "Broken orders"
    broken["nodes"][0]["config"]["path"] = "missing.json"
    bad = run_and_wait(qtbot, controller, broken, spec)
    assert bad["status"] == "failed"

    page = window.show_page("runs")
    qtbot.waitUntil(lambda: rows_of(page.table) == 2, timeout=30_000)
    assert page.table.item(0, 0).text() == "failed" and page.table.item(0, 1).text() == "Broken orders"
    assert [page.table.item(1, c).text() for c in (0, 1, 4, 5, 6)] == ["warning", PIPELINE, "15", "12", "3"]
    started = datetime.fromisoformat(good["started_at"].replace("Z", "+00:00")).astimezone()
    assert page.table.item(1, 2).text() == started.strftime("%Y-%m-%d %H:%M:%S")  # local time by default
    assert page.table.horizontalHeaderItem(2).text() == "Started (local time)"
    assert [page.pipeline_filter.itemText(i) for i in range(page.pipeline_filter.count())] == [
        "All", "Broken orders", PIPELINE,
    ]  # fmt: skip

    # filters, picked from their popups: status, pipeline, a preset time range, a From/To range
    pick(qtbot, page.status_filter, "failed")
    qtbot.waitUntil(lambda: ids_of(page) == [bad["run_id"]])
    pick(qtbot, page.status_filter, "All")
    pick(qtbot, page.pipeline_filter, PIPELINE)
    qtbot.waitUntil(lambda: ids_of(page) == [good["run_id"]])
    pick(qtbot, page.time_filter, "Last hour")
    qtbot.waitUntil(lambda: not page.overlay.active and ids_of(page) == [good["run_id"]])
    pick(qtbot, page.time_filter, "Between…")
    assert page.from_edit.isVisible() and page.to_edit.isVisible()
    now = datetime.now().astimezone().replace(second=0, microsecond=0, tzinfo=None)
    type_datetime(qtbot, page.from_edit, now - timedelta(days=3))
    type_datetime(qtbot, page.to_edit, now - timedelta(days=2))  # both runs are newer: none in range
    qtbot.waitUntil(lambda: page.stack.currentWidget() is page.no_match, timeout=30_000)
    type_datetime(qtbot, page.to_edit, now + timedelta(minutes=2))
    qtbot.waitUntil(lambda: ids_of(page) == [good["run_id"]], timeout=30_000)
    pick(qtbot, page.status_filter, "cancelled")
    qtbot.waitUntil(lambda: page.stack.currentWidget() is page.no_match)
    window.grab().save(str(artifacts / "runs_no_match.png"))
    qtbot.mouseClick(page.no_match.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: rows_of(page.table) == 2 and page.stack.currentWidget() is page.content)
    assert page.time_filter.currentText() == "Any time" and not page.range_box.isVisible()

    # detail of the good run: node statistics, log lines, rejected records
    click_row(qtbot, page, 1)
    assert page.detail_overlay.active  # read in the background
    qtbot.waitUntil(lambda: page.detail is not None and page.detail["record"]["run_id"] == good["run_id"])
    nodes = {page.nodes_table.item(r, 0).text(): r for r in range(page.nodes_table.rowCount())}
    assert page.nodes_table.item(nodes["union"], 4).text() == "15"
    assert page.nodes_table.item(nodes["check_email"], 5).text() == "3"
    log = page.log_view.toPlainText()
    assert "run started (manual)" in log and "run warning" in log
    assert page.detail_tabs.tabText(2) == "Rejected (3)"
    assert page.rejects_stack.currentWidget() is page.rejects_table
    rejects = page.rejects_table.frame()
    assert rejects["node_id"].to_list() == ["check_email"] * 3
    assert all("not a valid email" in reason for reason in rejects["reason"])
    assert PIPELINE in page.summary.text()
    for toast in list(window.toasts.toasts):  # the screenshots show the page, not the run toasts
        toast.dismiss()
    window.grab().save(str(artifacts / "runs.png"))
    qtbot.mouseClick(page.detail_tabs.tabBar(), Qt.MouseButton.LeftButton, pos=tab_center(page, 1))
    assert page.log_view.isVisible()
    window.grab().save(str(artifacts / "runs_log.png"))
    qtbot.mouseClick(page.detail_tabs.tabBar(), Qt.MouseButton.LeftButton, pos=tab_center(page, 2))
    window.grab().save(str(artifacts / "runs_rejected.png"))

    # detail of the failed run names the error; nothing was rejected: an empty state that offers
    # to open the pipeline (in the editor) to fix it
    click_row(qtbot, page, 0)
    qtbot.waitUntil(lambda: page.detail is not None and page.detail["record"]["run_id"] == bad["run_id"])
    assert "missing.json" in page.summary.text()
    assert page.detail_tabs.tabText(2) == "Rejected (0)"
    assert page.rejects_stack.currentWidget() is page.no_rejects and page.no_rejects.button.isVisible()
    window.grab().save(str(artifacts / "runs_failed.png"))

    # re-run the good one: a new run, selected when it is done
    click_row(qtbot, page, 1)
    qtbot.waitUntil(lambda: page.selected_run_id() == good["run_id"])
    qtbot.mouseClick(page.rerun_button, Qt.MouseButton.LeftButton)
    assert page.rerun_button.text() == "Stop re-run"  # it can be stopped while it runs
    qtbot.waitUntil(lambda: rows_of(page.table) == 3, timeout=30_000)
    qtbot.waitUntil(
        lambda: page.detail is not None and page.detail["record"]["trigger"] == "rerun", timeout=30_000
    )
    new = page.detail["record"]
    assert new["run_id"] not in (good["run_id"], bad["run_id"])
    assert (new["status"], new["rows_out"], new["version"]) == ("warning", 12, good_version(page, good))
    assert page.rerun_button.text() == "Re-run"
    assert page.table.item(0, 7).text() == "rerun" and page.table.item(0, 1).text() == PIPELINE

    # "Open pipeline" opens the run's pipeline file in the editor
    qtbot.mouseClick(page.open_button, Qt.MouseButton.LeftButton)
    assert window.current_page_name() == "editor"
    editor = window.pages["editor"]
    qtbot.waitUntil(lambda: editor.path == spec, timeout=30_000)


def good_version(page, good) -> int:
    return page.engine.runs.detail(good["run_id"])["record"]["version"]


# ---- a real_time pipeline from the editor: OPC UA simulator -> historian ----------------------------


def press_on_canvas(qtbot, page, key, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    window = page.main_window
    if not window.isActiveWindow():
        window.activateWindow()
        qtbot.waitUntil(window.isActiveWindow)  # shortcuts fire in the active window only
    viewer = page.canvas.graph.viewer()
    viewer.setFocus()
    qtbot.keyClick(viewer, key, modifiers)


def rows_drawn(page, node_id: str) -> int:
    stats = page.canvas.progress_of(node_id) or {}
    return stats.get("rows_out") or 0


def test_a_real_time_pipeline_streams_from_the_editor(qtbot, window, opcua_sim, artifacts):
    page = window.show_page("editor")
    window.resize(1300, 820)
    page.load_document(
        opcua_stream(opcua_sim, name="Wind farm stream", layout={"plc": [0, 0], "historian": [320, 0]})
    )
    with qtbot.waitSignal(page.validated, timeout=30_000):
        page.validate_now()
    assert page.issues == []

    with qtbot.waitSignal(page.runner.running_changed, timeout=30_000):
        press_on_canvas(qtbot, page, Qt.Key.Key_F5)
    assert page.runner.streaming
    assert page.run_action.text() == "Stop" and "streaming" in page.status.text()

    # the badges show live counts that grow with every stats tick (once a second)
    qtbot.waitUntil(lambda: rows_drawn(page, "historian") > 0, timeout=30_000)
    first = rows_drawn(page, "historian")
    assert page.canvas.progress_of("historian")["status"] == "running"
    assert "running" in page.canvas.badge_text("plc")
    qtbot.waitUntil(lambda: rows_drawn(page, "historian") > first, timeout=30_000)
    assert rows_drawn(page, "plc") >= rows_drawn(page, "historian")
    page.canvas.fit_to_view()
    qtbot.wait(50)
    window.grab().save(str(artifacts / "editor_streaming.png"))

    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as done:
        press_on_canvas(qtbot, page, Qt.Key.Key_F5, Qt.KeyboardModifier.ShiftModifier)
    record = done.args[0]
    assert record["status"] == "cancelled" and record["rows_out"] >= first
    assert page.run_action.text() == "Run" and not page.runner.running
    final = page.canvas.progress_of("historian")
    assert final["status"] != "running" and final["rows_out"] == record["rows_out"]
    assert f"{record['rows_out']:,} rows" in page.canvas.badge_text("historian")

    runs = window.show_page("runs")
    qtbot.waitUntil(lambda: [r["run_id"] for r in runs.records] == [record["run_id"]], timeout=30_000)
    assert runs.table.item(0, 1).text() == "Wind farm stream"
    assert runs.table.item(0, 0).text() == "cancelled"

    # a re-run of a real_time run streams again until the user stops it on the Runs page
    qtbot.waitUntil(lambda: runs.selected_run_id() == record["run_id"], timeout=30_000)
    qtbot.mouseClick(runs.rerun_button, Qt.MouseButton.LeftButton)
    assert runs.rerun_button.text() == "Stop re-run"
    qtbot.waitUntil(
        lambda: rows_of(runs.table) == 2 and runs.table.item(0, 0).text() == "running", timeout=30_000
    )
    assert runs.table.item(0, 7).text() == "rerun" and runs.table.item(0, 3).text() == "…"
    engine = window.engine
    qtbot.waitUntil(
        lambda: [s["state"] for s in engine.health.source_sessions()] == ["subscribed"], timeout=30_000
    )
    assert engine.health.active_streams() == 1
    qtbot.waitUntil(lambda: sum(engine.live.throughput().values()) > 0, timeout=30_000)  # rows committed
    qtbot.mouseClick(runs.rerun_button, Qt.MouseButton.LeftButton)
    assert runs.rerun_button.text() == "Stopping…" and not runs.rerun_button.isEnabled()
    qtbot.waitUntil(lambda: runs.rerun_job is None, timeout=30_000)
    qtbot.waitUntil(
        lambda: runs.detail is not None and runs.detail["record"]["trigger"] == "rerun", timeout=30_000
    )
    again = runs.detail["record"]
    assert again["run_id"] != record["run_id"] and again["status"] == "cancelled" and again["rows_out"] > 0
    assert runs.table.item(0, 0).text() == "cancelled" and runs.rerun_button.text() == "Re-run"
