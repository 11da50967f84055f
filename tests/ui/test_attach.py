"""The desktop app attached to a running service (`aggregator gui --attach URL`): a real
`aggregator serve` process (tests/service/conftest.py), the main window built on a `RemoteEngine`
for its URL and token the way `app/gui.py` builds it, and a user who sees the service's pipelines,
runs one with F5, finds the run on the Runs page and counted on the dashboard, and watches live
values of a real_time pipeline the service streams from a real OPC UA server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.pipelines import csv_into_duckdb, opcua_stream
from tests.service.conftest import serve  # noqa: F401 - the fixture
from tests.ui.conftest import opcua_simulator
from tests.ui.gestures import double_click

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture
def service(serve, tmp_path):  # noqa: F811 - the imported fixture
    """A service on a data directory holding one manual pipeline of the user's ("orders"), with a
    real_time pipeline in its --pipelines folder streaming four tags of an OPC UA simulator."""
    with opcua_simulator(1, 4) as sim:
        data_dir = tmp_path / "data"
        (data_dir / "pipelines").mkdir(parents=True)
        doc = csv_into_duckdb(tmp_path, 25, name="orders", table="orders")
        (data_dir / "pipelines" / "orders.json").write_text(json.dumps(doc), encoding="utf-8")
        streams = tmp_path / "streams"
        streams.mkdir()
        stream = opcua_stream(sim, name="turbine live", source_id="opcua", max_latency_ms=200)
        (streams / "turbine.json").write_text(json.dumps(stream), encoding="utf-8")
        yield serve("--pipelines", str(streams), data_dir=data_dir), sim


@pytest.fixture
def attached(qtbot, service):
    """The main window on the engine `aggregator gui --attach URL --token T` opens."""
    from PySide6.QtWidgets import QApplication

    from app.gui import open_engine
    from engine.service import token as api_token
    from ui import theme
    from ui.main_window import MainWindow

    proc, _sim = service
    token = api_token.ensure(proc.data_dir)  # what `aggregator token` prints on the service's machine
    engine = open_engine(None, attach=proc.url, token=token)
    theme.apply(QApplication.instance(), "light")
    win = MainWindow(engine)
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win, engine, proc
    win._closing_confirmed = True
    win.close()
    win.deleteLater()
    engine.close()


def proc_doc(proc) -> dict:
    return json.loads((proc.data_dir / "pipelines" / "orders.json").read_text(encoding="utf-8"))


def test_the_gui_drives_a_running_service(qtbot, attached, artifacts, tmp_path):
    from engine.api.remote import RemoteEngine

    window, engine, proc = attached
    assert isinstance(engine, RemoteEngine)
    assert window.windowTitle() == f"Data Aggregator — attached to {proc.url}"
    qtbot.waitUntil(
        lambda: window.engine_label.text() == f"Attached to {proc.url}  ·  service: ready", timeout=30_000
    )

    # The dashboard: the service's stream is active; today's runs so far (the stream's own run)
    dashboard = window.pages["dashboard"]
    cards = dashboard.cards
    qtbot.waitUntil(lambda: cards["active_streams"].value.text() == "1", timeout=30_000)
    runs_before = int(cards["runs_today"].value.text())

    # The Pipelines page lists the service's pipelines; F5 runs the selected one in the service.
    pipelines = window.show_page("pipelines")
    qtbot.waitUntil(lambda: pipelines.mine.topLevelItemCount() == 1, timeout=30_000)
    item = pipelines.mine.topLevelItem(0)
    assert (item.text(0), item.text(1), item.text(2)) == ("orders", "orders", "manual")  # by API id
    assert pipelines.mine.headerItem().text(1) == "Id"
    pipelines.mine.setCurrentItem(item)
    pipelines.mine.setFocus()
    assert pipelines.run_button.isEnabled()
    qtbot.keyClick(pipelines.mine, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: [r["status"] for r in proc.runs("orders")] == ["success"], timeout=30_000)
    record = proc.runs("orders")[0]
    assert record["rows_out"] == 25 and record["trigger"] == "manual"

    # The Runs page shows that run, with its status, as the service recorded it.
    runs = window.show_page("runs")
    qtbot.waitUntil(
        lambda: any(r["run_id"] == record["run_id"] and r["status"] == "success" for r in runs.records),
        timeout=30_000,
    )
    row = next(i for i, r in enumerate(runs.records) if r["run_id"] == record["run_id"])
    texts = [
        runs.table.item(row, c).text() for c in range(runs.table.columnCount()) if runs.table.item(row, c)
    ]
    assert any("orders" in t for t in texts) and any("success" in t for t in texts)
    runs.show_run(record["run_id"])  # its detail: node statistics from the service
    qtbot.waitUntil(lambda: runs.detail is not None and runs.nodes_table.rowCount() == 2, timeout=30_000)
    assert runs.detail["record"]["run_id"] == record["run_id"] and runs.detail["rejects"].height == 0

    # The dashboard counts it.
    window.show_page("dashboard")
    # Every run the service recorded: the stream's own run may have been recorded after runs_before
    # was read, so the count to wait for is the service's own, and it has grown.
    qtbot.waitUntil(
        lambda: cards["runs_today"].value.text() == str(len(proc.runs())) and len(proc.runs()) > runs_before,
        timeout=30_000,
    )

    # The editor opens the service's pipeline (double-click), its palette and forms from the registry.
    pipelines = window.show_page("pipelines")
    double_click(qtbot, pipelines.mine, pipelines.mine.topLevelItem(0))
    editor = window.pages["editor"]
    assert "editor" not in window.page_errors
    qtbot.waitUntil(lambda: window.current_page_name() == "editor", timeout=30_000)
    qtbot.waitUntil(lambda: set(editor.document.ids()) == {"src", "dst"}, timeout=30_000)
    assert editor.document.get("name") == "orders"
    # A file on this machine opens too (the Open dialog's), and saving sends it to the service.
    local = tmp_path / "local" / "orders_copy.json"
    local.parent.mkdir()
    local.write_text(json.dumps({**proc_doc(proc), "name": "orders copy"}), encoding="utf-8")
    editor.open_pipeline(local, confirm=False)
    qtbot.waitUntil(lambda: editor.document.get("name") == "orders copy", timeout=30_000)
    assert editor.path is None  # not the service's: Save asks where
    editor.save_to(tmp_path / "local" / "copy.json")
    qtbot.waitUntil(lambda: (proc.data_dir / "pipelines" / "copy.json").exists(), timeout=30_000)
    assert json.loads((proc.data_dir / "pipelines" / "copy.json").read_text())["name"] == "orders copy"
    connectors = window.show_page("connectors")
    assert "connectors" not in window.page_errors and "opc_ua" in connectors.types

    # The Data page lists the table the run wrote in the service and queries it (Arrow on the wire).
    data = window.show_page("data")
    names = lambda: [data.objects.item(i).data(Qt.ItemDataRole.UserRole) for i in range(data.objects.count())]  # noqa: E731
    qtbot.waitUntil(lambda: "orders" in names(), timeout=30_000)
    data.sql.setPlainText("SELECT count(*) AS n, sum(a) AS total FROM orders")
    qtbot.mouseClick(data.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: data.has_result or "✕" in data.sql_status.text(), timeout=30_000)
    assert data.result_table.frame().to_dicts() == [{"n": 25, "total": sum(range(25))}]

    # The Live page shows the simulator's tags, streaming in the service, with fresh good values.
    live = window.show_page("live")
    qtbot.waitUntil(lambda: len(live.browser.tags()) == 4, timeout=30_000)
    qtbot.waitUntil(lambda: live.browser.sources() == ["opcua"], timeout=30_000)
    tag = sorted(live.browser.tags())[0]
    first = live.browser.item(tag).text(3)
    assert live.browser.item(tag).text(2) == "good"
    qtbot.waitUntil(lambda: live.browser.item(tag).text(3) != first, timeout=30_000)  # it moves on
    # charted: its points come over /live/windows into the chart
    double_click(qtbot, live.browser.tree, live.browser.item(tag))
    qtbot.waitUntil(lambda: len(live.charts) == 1 and points(live.charts[0], tag) > 3, timeout=30_000)

    shot = artifacts / "attached.png"
    window.grab().save(str(shot))
    if os.environ.get("KEEP_DOCS_SCREENSHOTS"):  # by hand, for docs/service.md: a fuller chart
        qtbot.waitUntil(lambda: points(live.charts[0], tag) > 60 and live.idle, timeout=30_000)
        DOCS_IMAGES.mkdir(exist_ok=True)
        window.grab().save(str(DOCS_IMAGES / "attached.png"))


def points(chart, tag: str) -> int:
    return len(chart.series(tag)[0])


def test_gui_alone_attaches_to_the_service_that_owns_its_data_dir(service):
    from app.gui import open_engine
    from engine.api.remote import RemoteEngine

    proc, _sim = service
    engine = open_engine(proc.data_dir)
    try:
        assert isinstance(engine, RemoteEngine) and engine.url == proc.url
        assert [p["name"] for p in engine.pipelines.list() if p["origin"] == "mine"] == ["orders"]
    finally:
        engine.close()


def test_gui_attach_to_nothing_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    from tests.service.conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "gui", "--attach", "http://127.0.0.1:9", "--token", "t"],
        cwd=ROOT,
        env={**os.environ, "AGGREGATOR_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "http://127.0.0.1:9: cannot reach the service" in done.stderr


def test_attach_without_a_token_or_with_a_wrong_one_is_one_line(service, tmp_path, monkeypatch):
    from app.gui import open_engine
    from engine.errors import AggregatorError

    proc, _sim = service
    monkeypatch.delenv("AGGREGATOR_TOKEN", raising=False)
    with pytest.raises(AggregatorError, match="no API token") as missing:
        open_engine(tmp_path / "elsewhere", attach=proc.url)
    assert "--token" in str(missing.value) and "\n" not in str(missing.value)
    with pytest.raises(AggregatorError, match="refused the API token"):
        open_engine(tmp_path / "elsewhere", attach=proc.url, token="wrong")
