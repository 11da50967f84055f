"""The preview panel on the e-commerce demo: a node's first rows with their types, its rejected
rows with reasons, link row counts for the canvas, errors in one line, and Cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.connectors import registry
from tests.engine.streaming_sources import TicksConnector
from tests.pipelines import ecommerce_folder, opcua_stream, ticks_stream
from tests.ui.test_editor import click_node, open_file


@pytest.fixture
def folder(tmp_path) -> Path:
    return ecommerce_folder(tmp_path)


@pytest.fixture
def doc(folder) -> dict:
    return json.loads((folder / "ecommerce_orders.json").read_text())


def headers(table) -> list[str]:
    model = table.model()
    return [model.headerData(i, Qt.Orientation.Horizontal) for i in range(model.columnCount())]


def test_preview_shows_rows_types_rejects_and_edge_counts(qtbot, panel, doc, folder, artifacts):
    with qtbot.waitSignal(panel.edge_counts, timeout=30_000) as counts:
        panel.show_node(doc, "check_email", base_dir=folder)
        assert panel.overlay.active and panel.cancel_button.isVisible()

    assert not panel.running and not panel.overlay.active and not panel.cancel_button.isVisible()
    rows = panel.rows_table.frame()
    assert rows.height == 12
    assert sorted(rows["channel"].unique()) == ["shopify", "woocommerce"]
    assert "li.wei@example" not in rows["customer_email"].to_list()
    assert "order_date\nDatetime(time_unit='us', time_zone='UTC')" in headers(panel.rows_table)
    assert "total\nFloat64" in headers(panel.rows_table)
    assert panel.title.text().startswith("check_email · 12 rows")
    assert panel.tabs.tabText(1) == "Rejected (3)"
    rejected = panel.rejected_table.frame()
    assert rejected.columns[0] == "reason"
    assert sorted(rejected["order_id"]) == ["5003", "5006", "W-1004"]
    assert all("not a valid email" in reason for reason in rejected["reason"])
    assert counts.args[0][("union", "out")] == 15
    assert counts.args[0][("check_email", "rejected")] == 3
    assert not (folder / "unified_orders.json").exists()  # a dry run writes nothing
    panel.grab().save(str(artifacts / "preview.png"))
    panel.tabs.setCurrentIndex(1)
    panel.grab().save(str(artifacts / "preview_rejected.png"))


def test_a_newer_preview_replaces_the_running_one(qtbot, panel, doc, folder):
    panel.show_node(doc, "union", base_dir=folder)
    with qtbot.waitSignal(panel.finished, timeout=30_000) as done:
        panel.show_node(doc, "map_shopify", base_dir=folder)
    assert done.args[0].node == "map_shopify"
    assert panel.rows_table.frame().height == 8
    qtbot.wait(200)  # the first preview's result, if it comes, must not replace the table
    assert panel.node_id == "map_shopify" and panel.rows_table.frame().height == 8


def test_a_broken_spec_shows_one_line(qtbot, panel, doc, folder):
    doc["nodes"][0]["config"]["path"] = "missing.json"
    with qtbot.waitSignal(panel.failed, timeout=30_000) as failed:
        panel.show_node(doc, "map_shopify", base_dir=folder)
    assert "missing.json" in failed.args[0]
    assert "missing.json" in panel.title.text() and not panel.overlay.active


def test_cancel_stops_a_live_preview(qtbot, panel):
    registry.register(TicksConnector)
    doc = ticks_stream("ticks", rows_per_batch=1, interval_s=0.2)
    panel.show_node(doc, "ticks")
    job = panel.job
    qtbot.wait(200)
    with qtbot.waitSignal(panel.failed, timeout=30_000) as failed:
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert failed.args == ["cancelled"]
    assert panel.title.text() == "ticks: preview cancelled" and not panel.overlay.active
    qtbot.waitUntil(job.done, timeout=30_000)
    assert job.cancelled and type(job.future.exception()).__name__ == "RunCancelled"


# ---- a real protocol source: a short live sample from an OPC UA server ------------------------------


def opcua_doc(sim) -> dict:
    return opcua_stream(
        sim, name="wind farm preview", max_latency_ms=500, layout={"plc": [0, 0], "historian": [300, 0]}
    )


@pytest.fixture
def editor(window, qtbot):
    page = window.show_page("editor")
    page.main_window.resize(1300, 820)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.waitUntil(lambda: page._pipelines_dir is not None, timeout=30_000)  # on_show's fetch
    return page


def test_selecting_an_opc_ua_source_previews_a_live_sample(qtbot, editor, opcua_sim, tmp_path, artifacts):
    from engine.tags import TAG_SCHEMA

    page = editor
    spec = tmp_path / "wind_preview.json"
    spec.write_text(json.dumps(opcua_doc(opcua_sim)))
    open_file(qtbot, page, spec)
    page.bottom_tabs.setCurrentWidget(page.preview)
    with qtbot.waitSignal(page.preview.finished, timeout=30_000) as done:
        click_node(qtbot, page, "plc")  # selecting a node previews it (debounced)
        qtbot.waitUntil(lambda: page.preview.running, timeout=30_000)
        assert page.preview.overlay.active and page.preview.cancel_button.isVisible()
    result = done.args[0]
    assert result.live_sampled == ["plc"]
    rows = page.preview.rows_table.frame()
    assert rows.schema == TAG_SCHEMA
    assert rows.height > 0 and rows.height == page.preview.rows_table.model().rowCount()
    wanted = {node_id.split(";s=", 1)[1] for node_id in opcua_sim.node_ids()}  # Turbine01.Power ...
    assert set(rows["tag"]) == wanted  # every tag of the server, in its initial values
    assert set(rows["quality"]) == {"good"} and rows["value"].null_count() == 0
    assert page.preview.title.text().startswith("plc · ") and "live sample" in page.preview.title.text()
    page.main_window.grab().save(str(artifacts / "editor_opcua_preview.png"))
    # nothing was written: the historian has no tags
    assert page.engine.call(lambda: page.engine.workspace.metadata.runs()).result(10) == []


def test_a_live_sample_can_be_cancelled_while_sampling(qtbot, panel, opcua_sim, monkeypatch):
    import engine.preview

    # The sample listens a minute, so the Cancel below lands while it listens however slow the
    # machine (with the 2 s default, a starved GUI thread once woke after the sample had ended).
    monkeypatch.setattr(engine.preview, "LIVE_SAMPLE_S", 60.0)
    opcua_sim.stall()  # values stop changing: the sample waits its full time for more rows
    try:
        listening = opcua_sim.subscriptions()
        panel.show_node(opcua_doc(opcua_sim), "plc")
        job = panel.job
        qtbot.waitUntil(lambda: opcua_sim.subscriptions() > listening, timeout=30_000)  # connected, listening
        assert panel.running and not job.done()
        with qtbot.waitSignal(panel.failed, timeout=30_000) as failed:
            qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        assert failed.args == ["cancelled"] and not panel.overlay.active
        qtbot.waitUntil(job.done, timeout=30_000)
        assert job.cancelled and type(job.future.exception()).__name__ == "RunCancelled"
        assert panel.result is None  # the partial sample is no preview
    finally:
        opcua_sim.stall(False)
