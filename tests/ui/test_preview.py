"""The preview panel on the e-commerce demo: a node's first rows with their types, its rejected
rows with reasons, link row counts for the canvas, errors in one line, and Cancel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.connectors import registry
from tests.engine.streaming_sources import TicksConnector
from ui.editor.preview_panel import PreviewPanel

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


@pytest.fixture
def folder(tmp_path) -> Path:
    target = tmp_path / "ecommerce"
    shutil.copytree(RESOURCES / "examples" / "ecommerce", target)
    shutil.copy(RESOURCES / "pipelines" / "ecommerce_orders.json", target)
    return target


@pytest.fixture
def doc(folder) -> dict:
    return json.loads((folder / "ecommerce_orders.json").read_text())


@pytest.fixture
def panel(qtbot, window):
    panel = PreviewPanel(window.engine, window.bridge, limit=100)
    qtbot.addWidget(panel)
    panel.resize(1000, 380)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def headers(table) -> list[str]:
    model = table.model()
    return [model.headerData(i, Qt.Orientation.Horizontal) for i in range(model.columnCount())]


def test_preview_shows_rows_types_rejects_and_edge_counts(qtbot, panel, doc, folder, artifacts):
    with qtbot.waitSignal(panel.edge_counts, timeout=20_000) as counts:
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
    with qtbot.waitSignal(panel.finished, timeout=20_000) as done:
        panel.show_node(doc, "map_shopify", base_dir=folder)
    assert done.args[0].node == "map_shopify"
    assert panel.rows_table.frame().height == 8
    qtbot.wait(200)  # the first preview's result, if it comes, must not replace the table
    assert panel.node_id == "map_shopify" and panel.rows_table.frame().height == 8


def test_a_broken_spec_shows_one_line(qtbot, panel, doc, folder):
    doc["nodes"][0]["config"]["path"] = "missing.json"
    with qtbot.waitSignal(panel.failed, timeout=20_000) as failed:
        panel.show_node(doc, "map_shopify", base_dir=folder)
    assert "missing.json" in failed.args[0]
    assert "missing.json" in panel.title.text() and not panel.overlay.active


def test_cancel_stops_a_live_preview(qtbot, panel):
    registry.register(TicksConnector)
    doc = {
        "name": "ticks",
        "nodes": [
            {"id": "ticks", "kind": "source", "connector_type": "test_ticks",
             "config": {"rows_per_batch": 1, "batches": None, "interval_s": 0.2}},
            {"id": "out", "kind": "destination", "inputs": ["ticks"], "connector_type": "duckdb",
             "config": {"table": "ticks"}},
        ],
        "schedule": {"type": "real_time"},
    }  # fmt: skip
    panel.show_node(doc, "ticks")
    job = panel.job
    qtbot.wait(200)
    with qtbot.waitSignal(panel.failed, timeout=5_000) as failed:
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert failed.args == ["cancelled"]
    assert panel.title.text() == "ticks: preview cancelled" and not panel.overlay.active
    qtbot.waitUntil(job.done, timeout=5_000)
    assert job.cancelled and type(job.future.exception()).__name__ == "RunCancelled"
