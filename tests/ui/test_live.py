"""The Live page as a user sees it: a real OPC UA simulator streamed through a real_time pipeline
(opc_ua -> historian) by the engine; the tag browser lists the tags, a double-clicked tag is
charted and its curve grows, pause freezes it, the mouse moves a crosshair that reads values, the
Export buttons write the visible points through the file dialog; a window picked in the selector
reads the historian for the older part; drops add tags; the chart menu removes tags and charts."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from engine.store.tag_historian import TagHistorian
from engine.tags import conform
from tests.pipelines import opcua_stream
from tests.ui.conftest import opcua_simulator
from tests.ui.gestures import click_in_modal, click_item, double_click, pick, save_as

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "live.png"


@pytest.fixture(scope="module")
def simulator():
    with opcua_simulator(3, 4) as sim:  # 12 tags
        yield sim


def stream_spec(sim) -> dict:
    return opcua_stream(sim, name="windfarm live", source_id="opcua", max_latency_ms=200)


def points(chart, tag: str) -> int:
    return len(chart.series(tag)[0])


def view_point(chart, x: float, y: float) -> QPoint:
    """Where the data point (x, y) is on the chart's viewport."""
    return chart.mapFromScene(chart.getViewBox().mapViewToScene(QPointF(x, y)))


def wheel_on_time_axis(chart, x: float, steps: int) -> None:
    """Turn the mouse wheel `steps` notches away from the user over the chart's time axis at `x`."""
    axis = chart.getPlotItem().getAxis("bottom").sceneBoundingRect()
    scene_x = chart.getViewBox().mapViewToScene(QPointF(x, 0)).x()
    pos = chart.mapFromScene(QPointF(scene_x, axis.center().y()))
    event = QWheelEvent(
        QPointF(pos),
        QPointF(chart.viewport().mapToGlobal(pos)),
        QPoint(0, 0),
        QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(chart.viewport(), event)


def toast_texts(window) -> list[str]:
    return [t.text for t in window.toasts.toasts]


def test_live_view_charts_a_simulators_tags(
    qtbot, window, engine, simulator, tmp_path, artifacts, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))  # where the first export dialog opens
    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.stack.currentWidget() is page.empty, timeout=30_000)  # nothing streams yet
    assert not page.csv_button.isEnabled() and not page.clear_button.isEnabled()  # nothing charted

    job = engine.runs.start_stream(stream_spec(simulator))
    try:
        # The tag browser lists every simulator tag under its source, with value, quality and time.
        qtbot.waitUntil(lambda: len(page.browser.tags()) == 12, timeout=30_000)
        assert page.stack.currentWidget() is page.content
        qtbot.waitUntil(lambda: page.browser.sources() == ["opcua"], timeout=30_000)  # from the historian
        item = page.browser.item("Turbine01.Power")
        assert item.parent().text(0) == "opcua" and item.parent().text(1) == "12 tags"
        assert item.text(2) == "good" and float(item.text(1)) > 0
        shown = datetime.strptime(item.text(3), "%H:%M:%S.%f").time()
        age = datetime.combine(datetime.now().date(), datetime.now().time()) - datetime.combine(
            datetime.now().date(), shown
        )
        assert timedelta(0) <= age < timedelta(seconds=10)  # the newest value's local time

        # Typing in the filter narrows the tree; double-clicking a tag charts it.
        qtbot.keyClicks(page.browser.filter, "power")
        assert [t for t in page.browser.tags() if not page.browser.item(t).isHidden()] == [
            "Turbine01.Power",
            "Turbine02.Power",
            "Turbine03.Power",
        ]
        double_click(qtbot, page.browser.tree, item)
        assert len(page.charts) == 1 and page.charts[0].tags == ["Turbine01.Power"]
        assert page.csv_button.isEnabled()
        page.browser.filter.selectAll()
        qtbot.keyClick(page.browser.filter, Qt.Key.Key_Backspace)
        assert not page.browser.item("Turbine02.WindSpeed").isHidden()

        # The curve grows as the stream goes on, and draws the points in view.
        chart = page.charts[0]
        qtbot.waitUntil(lambda: points(chart, "Turbine01.Power") > 3, timeout=30_000)
        before = points(chart, "Turbine01.Power")
        qtbot.waitUntil(lambda: points(chart, "Turbine01.Power") > before + 3, timeout=30_000)
        drawn_x, _ = chart.curves["Turbine01.Power"].getData()
        (x0, x1), _ = chart.viewRange()
        inside = [x for x in chart.series("Turbine01.Power")[0] if x0 <= x <= x1]
        assert len(inside) > 0 and set(inside) <= set(drawn_x)
        assert x1 - x0 == pytest.approx(60, abs=0.5) and abs(x1 - time.time()) < 2  # the last minute

        # A second chart, linked on X, with another tag.
        qtbot.mouseClick(page.add_chart_button, Qt.MouseButton.LeftButton)
        double_click(qtbot, page.browser.tree, page.browser.item("Turbine02.WindSpeed"))
        assert page.charts[1].tags == ["Turbine02.WindSpeed"] and chart.tags == ["Turbine01.Power"]
        qtbot.waitUntil(lambda: points(page.charts[1], "Turbine02.WindSpeed") > 3, timeout=30_000)
        assert page.charts[1].getViewBox().linkedView(0) is chart.getViewBox()

        # Throughput of the running pipeline (from its stream_stats events): 12 tags at ~10/s.
        qtbot.waitUntil(lambda: "windfarm live" in page.throughput.pipelines(), timeout=30_000)
        qtbot.waitUntil(lambda: page.throughput.series("windfarm live")[1].max() > 10, timeout=30_000)

        # Values of bad quality are shaded on the trace; the tag shows its quality.
        simulator.flip_quality("bad")
        try:
            qtbot.waitUntil(lambda: len(chart.shaded_spans) >= 1, timeout=30_000)
            qtbot.waitUntil(lambda: page.browser.item("Turbine01.Power").text(2) == "bad", timeout=30_000)
        finally:
            simulator.flip_quality("good")
        qtbot.waitUntil(lambda: page.browser.item("Turbine01.Power").text(2) == "good", timeout=30_000)
        bad_start, bad_end = chart.shaded_spans[0]
        x, _, q = chart.series("Turbine01.Power")
        assert np.all(q[(x >= bad_start) & (x < bad_end)] == 2)  # the shade covers bad points only
        qtbot.wait(1000)  # some good values after the bad span, for the picture

        # Pause freezes the charts.
        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
        assert page.paused and page.pause_button.text() == "Resume"
        frozen = points(chart, "Turbine01.Power")
        frozen_range = chart.viewRange()[0]
        qtbot.wait(600)
        assert points(chart, "Turbine01.Power") == frozen and chart.viewRange()[0] == frozen_range

        # Paused, the wheel over the time axis zooms in on the newest points; every chart follows.
        # The newest point can sit on the frozen view's last pixel (or just past it, by the source's
        # clock): the wheel turns two pixels inside the edge.
        newest = chart.series("Turbine01.Power")[0][-1]
        pixel_s = (frozen_range[1] - frozen_range[0]) / chart.getViewBox().width()
        anchor = min(newest, frozen_range[1] - 2 * pixel_s)
        wheel_on_time_axis(chart, anchor, steps=6)
        (x0, x1), _ = chart.viewRange()
        assert x1 - x0 < (frozen_range[1] - frozen_range[0]) / 4 and x0 < anchor <= x1
        assert newest - x1 < 3 * pixel_s  # the newest points are in view
        assert page.charts[1].viewRange()[0] == [x0, x1]
        qtbot.wait(300)
        assert chart.viewRange()[0] == [x0, x1]  # paused: the page leaves the zoom alone

        # Moving the mouse over a chart reads every chart's values at that time (both crosshairs).
        x, y, _ = chart.series("Turbine01.Power")
        moved: list[float] = []
        chart.crosshair_moved.connect(moved.append)
        qtbot.mouseMove(chart.viewport(), view_point(chart, float(x[-5]), float(y[-5])))
        qtbot.waitUntil(lambda: bool(moved), timeout=30_000)
        nearest = int(np.argmin(np.abs(x - moved[-1])))
        assert f"Turbine01.Power: {y[nearest]:.6g}" in page.readout.text()
        assert "Turbine02.WindSpeed:" in page.readout.text()
        assert chart.cursor.isVisible() and page.charts[1].cursor.isVisible()
        assert page.charts[1].cursor.value() == chart.cursor.value() == moved[-1]
        dot = chart.markers.points()[0].pos()  # a dot on the curve at the value read out
        assert (dot.x(), dot.y()) == (x[nearest], pytest.approx(y[nearest]))
        shot = artifacts / "live.png"
        window.grab().save(str(shot))
        assert shot.stat().st_size > 10_000

        # Export CSV: the button opens a file dialog; the visible points are written (paused: as shown).
        csv_path = tmp_path / "visible.csv"
        save_as("visible.csv")
        qtbot.mouseClick(page.csv_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: any(t.startswith("Exported ") for t in toast_texts(window)), timeout=30_000)
        assert page.csv_button.text() == "Export CSV" and page.csv_button.isEnabled()
        exported = pl.read_csv(csv_path)
        visible = sum(len(s[0]) for c in page.charts for s in c.visible().values())
        assert exported.height == visible > 0
        assert f"Exported {visible} points to {csv_path}" in toast_texts(window)
        assert set(exported["tag"]) == {"Turbine01.Power", "Turbine02.WindSpeed"}
        assert set(exported["chart"]) == {1, 2}
        assert "bad" in set(exported["quality"]) and "good" in set(exported["quality"])
        power = exported.filter(pl.col("tag") == "Turbine01.Power")["value"].to_numpy()
        assert np.allclose(power, chart.visible()["Turbine01.Power"][1], equal_nan=True)

        # Export PNG the same way.
        png_path = tmp_path / "charts.png"  # the dialog opens where the CSV went
        save_as("charts.png")
        qtbot.mouseClick(page.png_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: f"Saved {png_path}" in toast_texts(window), timeout=30_000)
        assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 5_000

        # Resume: the charts follow the clock again.
        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
        assert not page.paused and page.pause_button.text() == "Pause"
        qtbot.waitUntil(lambda: points(chart, "Turbine01.Power") > frozen, timeout=30_000)
        qtbot.waitUntil(lambda: chart.viewRange()[0][1] > frozen_range[1], timeout=30_000)
    finally:
        engine.runs.stop(job.id)
        record = job.result(30)
    assert record["status"] == "cancelled" and record["rows_out"] > 0  # stopped by the user
    qtbot.waitUntil(lambda: engine.live.throughput() == {}, timeout=30_000)  # no longer running
    page.shutdown()
    qtbot.waitUntil(lambda: page.idle, timeout=30_000)


def store_history(engine, now: datetime) -> None:
    """50 minutes of `plant.temp` in the historian every 10 s (bad for 100 s around minute -25),
    and its last 5 s (value 30) in the ring buffer, as the historian destination leaves them."""
    seconds = list(range(-3000, -5, 10))
    older = conform(
        pl.DataFrame(
            {
                "tag": ["plant.temp"] * len(seconds),
                "timestamp": [now + timedelta(seconds=s) for s in seconds],
                "value": [20.0 + s / 1000 for s in seconds],
                "quality": ["bad" if -1500 <= s < -1400 else "good" for s in seconds],
                "source": ["plc"] * len(seconds),
            }
        )
    )
    TagHistorian(engine.workspace.historian).append(older)
    recent = conform(
        pl.DataFrame(
            {
                "tag": ["plant.temp"] * 5,
                "timestamp": [now - timedelta(seconds=s) for s in (4, 3, 2, 1, 0)],
                "value": [30.0] * 5,
                "quality": ["good"] * 5,
                "source": ["plc"] * 5,
            }
        )
    )
    engine.live.buffer().append(recent)


def test_window_switching_reads_the_historian_for_the_older_part(qtbot, window, engine):
    now = datetime.now(UTC)
    store_history(engine, now)
    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.browser.tags() == ["plant.temp"], timeout=30_000)
    qtbot.waitUntil(lambda: page.browser.sources() == ["plc"], timeout=30_000)
    assert page.window_box.currentText() == "1 min"
    double_click(qtbot, page.browser.tree, page.browser.item("plant.temp"))
    chart = page.charts[0]
    # 1 min: the ring buffer's 5 points and the historian's 10-s values of the last minute.
    qtbot.waitUntil(lambda: points(chart, "plant.temp") >= 5 + 5, timeout=30_000)
    assert points(chart, "plant.temp") <= 5 + 6
    assert chart.shaded_spans == []

    pick(qtbot, page.window_box, "1 h")
    assert page.status.text() == "Reading 1 h of history…"  # until the historian answers
    qtbot.waitUntil(lambda: points(chart, "plant.temp") > 250, timeout=30_000)
    qtbot.waitUntil(lambda: page.status.text() == "", timeout=30_000)
    x, y, _ = chart.series("plant.temp")
    assert np.all(np.diff(x) > 0) and y[-1] == 30.0
    assert x[0] < now.timestamp() - 2900  # reaches back to the start of the stored history
    # The bad values are shaded (one span around minute -25).
    spans = chart.shaded_spans
    assert len(spans) == 1
    assert now.timestamp() - 1510 < spans[0][0] < now.timestamp() - 1490
    (x0, x1), _ = chart.viewRange()
    assert x1 - x0 == pytest.approx(3600, rel=0.01)

    pick(qtbot, page.window_box, "10 min")
    qtbot.waitUntil(lambda: 55 <= points(chart, "plant.temp") <= 70, timeout=30_000)

    # Paused, a window picked keeps the paused end: the charts show that window up to it.
    qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    (_, paused_end), _ = chart.viewRange()
    qtbot.wait(300)
    pick(qtbot, page.window_box, "24 h")
    qtbot.waitUntil(lambda: page.status.text() == "", timeout=30_000)
    (x0, x1), _ = chart.viewRange()
    assert x1 == pytest.approx(paused_end, abs=1e-3) and x1 - x0 == pytest.approx(86_400, rel=0.01)
    assert chart.series("plant.temp")[0][0] < now.timestamp() - 2900  # the whole history is in it


def drag_onto(widget, mime) -> None:
    """What a drag from the tag browser delivers to `widget`: enter, move, drop (a real QDrag blocks
    in its own loop offscreen, so the events it would send are sent here)."""
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    buttons, keys = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    action = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(pos.toPoint(), action, mime, buttons, keys)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(widget, QDragMoveEvent(pos.toPoint(), action, mime, buttons, keys))
    drop = QDropEvent(pos, action, mime, buttons, keys, QEvent.Type.Drop)
    QApplication.sendEvent(widget, drop)
    assert drop.isAccepted()


def three_tags(engine) -> None:
    now = datetime.now(UTC)
    frame = conform(
        pl.DataFrame(
            {
                "tag": ["a.one", "a.two", "b.three"],
                "timestamp": [now] * 3,
                "value": [1.0, 2.0, 3.0],
                "source": ["a", "a", "b"],
            }
        )
    )
    TagHistorian(engine.workspace.historian).append(frame)
    engine.live.buffer().append(frame)


def test_tags_dragged_onto_a_chart_are_charted(qtbot, window, engine):
    three_tags(engine)
    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.browser.sources() == ["a", "b"], timeout=30_000)
    qtbot.mouseClick(page.add_chart_button, Qt.MouseButton.LeftButton)
    chart = page.charts[0]
    tree = page.browser.tree
    click_item(qtbot, tree, page.browser.item("a.two"))
    click_item(qtbot, tree, page.browser.item("b.three"), Qt.KeyboardModifier.ControlModifier)
    assert page.browser.selected_tags() == ["a.two", "b.three"]
    drag_onto(chart.viewport(), tree.mimeData(tree.selectedItems()))
    assert chart.tags == ["a.two", "b.three"]
    qtbot.waitUntil(lambda: points(chart, "b.three") == 1, timeout=30_000)


def test_times_follow_the_settings_time_zone(qtbot, window, engine):
    """The tag list's timestamps, the time axes and the crosshair read-out are shown in the time
    zone the Settings page saved (here Kolkata, UTC+05:30: no DST, and unlike most test machines)."""
    from zoneinfo import ZoneInfo

    from ui.preferences import Preferences

    three_tags(engine)
    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.browser.sources() == ["a", "b"], timeout=30_000)
    qtbot.mouseClick(page.add_chart_button, Qt.MouseButton.LeftButton)
    chart = page.charts[0]
    stamp_us = engine.live.buffer().last("a.one")[0]
    kolkata = ZoneInfo("Asia/Kolkata")
    prefs = Preferences.of(window)
    prefs.apply({**prefs.values, "time_zone": "Asia/Kolkata"}, kolkata)  # what the page's Save does
    qtbot.waitUntil(
        lambda: (
            page.browser.item("a.one").text(3)
            == datetime.fromtimestamp(stamp_us / 1e6, kolkata).strftime("%H:%M:%S.%f")[:-3]
        ),
        timeout=30_000,
    )
    for plot in (chart, page.throughput):
        assert plot.getPlotItem().getAxis("bottom").utcOffset == -(5 * 3600 + 1800)
    readout = chart.show_crosshair(stamp_us / 1e6)
    assert readout.startswith(datetime.fromtimestamp(stamp_us / 1e6, kolkata).strftime("%Y-%m-%d %H:%M:%S"))
    prefs.apply({**prefs.values, "time_zone": "local"}, None)  # back to the computer's zone
    assert chart.getPlotItem().getAxis("bottom").utcOffset is None


def test_the_chart_menu_removes_tags_and_charts_and_clearing_asks_first(qtbot, window, engine):
    three_tags(engine)
    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.browser.sources() == ["a", "b"], timeout=30_000)
    for tag in ("a.one", "a.two"):
        double_click(qtbot, page.browser.tree, page.browser.item(tag))
    qtbot.mouseClick(page.add_chart_button, Qt.MouseButton.LeftButton)
    double_click(qtbot, page.browser.tree, page.browser.item("b.three"))
    first, second = page.charts
    assert first.tags == ["a.one", "a.two"] and second.tags == ["b.three"]

    def choose(chart, text: str) -> None:
        qtbot.mouseClick(chart.viewport(), Qt.MouseButton.RightButton, pos=chart.viewport().rect().center())
        qtbot.waitUntil(chart.menu.isVisible, timeout=30_000)
        action = next(a for a in chart.menu.actions() if a.text() == text)
        qtbot.mouseClick(
            chart.menu, Qt.MouseButton.LeftButton, pos=chart.menu.actionGeometry(action).center()
        )
        qtbot.waitUntil(lambda: not chart.menu.isVisible(), timeout=30_000)

    choose(first, "Remove a.one")
    assert first.tags == ["a.two"] and page.chart_tags() == ["a.two", "b.three"]
    assert "a.one" not in [first.legend.items[i][1].text for i in range(len(first.legend.items))]

    choose(first, "Remove chart")  # the second chart stays, and leads the X axis now
    assert page.charts == [second] and page.throughput.getViewBox().linkedView(0) is second.getViewBox()
    qtbot.waitUntil(lambda: points(second, "b.three") == 1, timeout=30_000)
    (_, x1), _ = second.viewRange()
    assert abs(x1 - time.time()) < 2  # still following the clock

    # Clear charts asks first: Cancel keeps them, Clear removes them.
    click_in_modal("ConfirmReject")
    qtbot.mouseClick(page.clear_button, Qt.MouseButton.LeftButton)
    assert page.charts == [second]
    click_in_modal("ConfirmAccept")
    qtbot.mouseClick(page.clear_button, Qt.MouseButton.LeftButton)
    assert page.charts == [] and not page.clear_button.isEnabled() and not page.csv_button.isEnabled()
    assert page.hint.isVisible()


def test_loading_then_empty_state_leads_to_the_pipelines(qtbot, window):
    page = window.show_page("live")
    assert page.stack.currentWidget() is page.loading  # the first tag list is being read
    assert page.loading.label.text() == "Reading the live tags…"
    qtbot.waitUntil(lambda: page.stack.currentWidget() is page.empty, timeout=30_000)
    assert "No tags are live" in page.empty.label.text()
    qtbot.mouseClick(page.empty.button, Qt.MouseButton.LeftButton)
    assert window.current_page_name() == "pipelines"


def test_export_errors_are_one_line_toasts(qtbot, window, engine, tmp_path):
    three_tags(engine)
    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.browser.sources() == ["a", "b"], timeout=30_000)
    double_click(qtbot, page.browser.tree, page.browser.item("a.one"))
    missing = tmp_path / "no such folder"
    page.export_csv(missing / "x.csv")
    page.export_png(missing / "x.png")
    qtbot.waitUntil(lambda: len([t for t in toast_texts(window) if "failed" in t]) == 2, timeout=30_000)
    errors = sorted(t.text for t in window.toasts.toasts if t.kind == "error")
    assert errors == [
        f"CSV export failed: {missing / 'x.csv'}: the folder does not exist",
        f"PNG export failed: {missing / 'x.png'}: the image could not be written (does the folder exist?)",
    ]
    assert page.csv_button.isEnabled() and page.csv_button.text() == "Export CSV"


def _keep_for_docs(shot: Path) -> None:  # used by hand: python -c "...": see the module's report
    shutil.copy(shot, DOCS_IMAGE)


def test_tag_browser_fills_the_rows_on_screen_and_the_rest_when_scrolled_to(qtbot):
    from ui.live.tag_browser import TagBrowser

    browser = TagBrowser()
    qtbot.addWidget(browser)
    browser.resize(500, 300)
    browser.show()
    qtbot.waitExposed(browser)
    rows = [
        {"tag": f"unit.tag{i:04d}", "source": "plc", "value": float(i), "quality": "good", "timestamp_us": 1}
        for i in range(1000)
    ]
    browser.update_tags(rows)
    browser.update_tags(rows)  # the second refresh sees the laid-out rows
    assert len(browser.tags()) == 1000 and browser.sources() == ["plc"]
    assert browser.item("unit.tag0000").text(1) == "0"
    last = browser.item("unit.tag0999")
    assert last.text(1) == ""  # off screen: not filled yet
    browser.tree.scrollToItem(last)
    qtbot.waitUntil(lambda: last.text(1) == "999", timeout=30_000)
    browser.filter.setText("tag0500")
    assert [t for t in browser.tags() if not browser.item(t).isHidden()] == ["unit.tag0500"]


def test_peak_reduce_keeps_spikes_the_newest_point_and_only_the_view():
    from ui.live.charts import peak_reduce

    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 500.0)
    y[54_321] = 50.0  # a one-point spike
    y[60_000] = np.nan  # a gap
    shown_x, shown_y = peak_reduce(x, y, 10_000.0, 99_999.0, columns=1000)
    assert len(shown_x) <= 2 * 1000 + 200  # about two points a column, plus the tail
    assert shown_x[0] <= 10_000.0 and shown_x[-1] == 99_999.0 and shown_y[-1] == y[-1]
    assert np.all(np.diff(shown_x) >= 0)
    assert np.nanmax(shown_y) == 50.0 and np.isnan(shown_y).any()
    assert np.nanmin(shown_y) == pytest.approx(np.nanmin(y[10_000:]), abs=1e-6)
    # Few points: drawn as they are.
    small_x, small_y = peak_reduce(x[:50], y[:50], 0.0, 49.0, columns=1000)
    assert np.array_equal(small_x, x[:50]) and np.array_equal(small_y, y[:50])


@pytest.mark.parametrize("points", [1, 2, 3, 2_001, 10_000, 123_457])
def test_peak_reduce_min_and_max_match_the_visible_points(points):
    from ui.live.charts import peak_reduce

    rng = np.random.default_rng(points)
    x = np.cumsum(rng.uniform(0.1, 1.0, points))
    y = rng.normal(0, 1, points)
    x0, x1 = x[points // 4], x[-1] - (x[-1] - x[0]) / 10
    shown_x, shown_y = peak_reduce(x, y, float(x0), float(x1), columns=500)
    lo = max(0, np.searchsorted(x, x0) - 1)
    hi = min(points, np.searchsorted(x, x1, "right") + 1)
    assert shown_y.max() == y[lo:hi].max() and shown_y.min() == y[lo:hi].min()
    assert shown_x[0] == x[lo] and len(shown_x) <= max(2 * 500 + 500, hi - lo)


def test_a_chart_draws_each_new_series_once_and_a_bounded_number_of_points(qtbot):
    from ui.live.charts import TagChart

    chart = TagChart()
    qtbot.addWidget(chart)
    chart.resize(800, 300)
    chart.show()
    qtbot.waitExposed(chart)
    ts = 1_700_000_000_000_000 + np.arange(10_000, dtype=np.int64) * 4_500
    chart.setXRange(ts[0] / 1e6, ts[-1] / 1e6, padding=0)
    calls = []
    curve = chart.add_curve("a")
    original = curve.setData
    curve.setData = lambda *a, **k: (calls.append(len(a[0])), original(*a, **k))[1]
    chart.set_series("a", ts, np.sin(np.arange(10_000) / 50.0), np.zeros(10_000, np.uint8), draw=False)
    assert calls == []  # held until the frame draws
    chart.draw()
    chart.draw()  # nothing changed: not drawn again
    assert len(calls) == 1 and calls[0] <= 2 * chart.getViewBox().width() + 100
    chart.setXRange(ts[5_000] / 1e6, ts[-1] / 1e6, padding=0)  # a zoom redraws from the full series
    assert len(calls) == 2
    drawn = curve.getData()[0]
    assert ts[4_999] / 1e6 == drawn[0] < ts[5_000] / 1e6  # from the point just left of the view


def test_bad_spans_are_shaded_in_the_colour_the_translucent_brush_shows_on_white(qtbot):
    from ui.live.charts import BAD_BRUSH, TagChart, opaque_over

    assert opaque_over((214, 69, 69, 45), (255, 255, 255)) == (248, 222, 222)
    assert opaque_over((10, 20, 30, 255), (255, 255, 255)) == (10, 20, 30)
    chart = TagChart()
    qtbot.addWidget(chart)
    chart.resize(600, 250)
    chart.show()
    qtbot.waitExposed(chart)
    ts = 1_700_000_000_000_000 + np.arange(1_000, dtype=np.int64) * 10_000
    quality = np.where((np.arange(1_000) >= 400) & (np.arange(1_000) < 600), 2, 0).astype(np.uint8)
    chart.set_series("a", ts, np.zeros(1_000), quality)
    chart.setXRange(ts[0] / 1e6, ts[-1] / 1e6, padding=0)
    chart.shade_bad_quality()
    assert chart.shaded_spans == [(ts[400] / 1e6, ts[600] / 1e6)]
    image = chart.grab().toImage()
    view = chart.getViewBox()
    middle = view.mapViewToDevice(QPointF(ts[500] / 1e6, 0.5)).toPoint()  # above the flat curve
    outside = view.mapViewToDevice(QPointF(ts[100] / 1e6, 0.5)).toPoint()
    shown = image.pixelColor(middle)
    assert (shown.red(), shown.green(), shown.blue()) == opaque_over(BAD_BRUSH, (255, 255, 255))
    assert image.pixelColor(outside).name() == "#ffffff"


def test_the_page_timer_never_refreshes_charts_and_tags_in_the_same_tick(qtbot, window, monkeypatch):
    """One 50 ms timer drives the page: the charts on every 4th tick, the tag list on every 10th
    from tick 5, so the two (and the repaints they cause) never share one loop pass."""
    page = window.show_page("live")
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(page, "refresh_charts", lambda: calls.append((page._ticks - 1, "charts")))
    monkeypatch.setattr(page, "refresh_tags", lambda: calls.append((page._ticks - 1, "tags")))
    page._timer.stop()
    page._ticks = 0
    for _ in range(40):  # two seconds of ticks
        page._tick()
    charts = [tick for tick, job in calls if job == "charts"]
    tags = [tick for tick, job in calls if job == "tags"]
    assert charts == list(range(0, 40, 4))  # 5x/s
    assert tags == [5, 15, 25, 35]  # 2x/s
    assert not set(charts) & set(tags)
    assert page._timer.timerType() == Qt.TimerType.PreciseTimer
