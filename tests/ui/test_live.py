"""The Live page as a user sees it: a real OPC UA simulator streamed through a real_time pipeline
(opc_ua -> historian) by the engine; the tag browser lists the tags, a double-clicked tag is
charted and its curve grows, pause freezes it, the crosshair reads values, exports write the
visible points; window switching reads the historian for the older part; drops add tags."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QDropEvent

from engine.store.tag_historian import TagHistorian
from engine.tags import conform

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "live.png"


@pytest.fixture(scope="module")
def simulator():
    from protocols.opcua.simulator import OpcUaSimulator

    sim = OpcUaSimulator(turbines=3, tags_per_turbine=4, interval_s=0.1).start()
    yield sim
    sim.stop()


def stream_spec(sim) -> dict:
    return {
        "name": "windfarm live",
        "spec_version": 1,
        "nodes": [
            {
                "id": "opcua",
                "kind": "source",
                "connector_type": "opc_ua",
                "config": {
                    "endpoint": sim.endpoint,
                    "nodes": sim.node_ids(),
                    "publishing_interval_ms": 100,
                    "sampling_interval_ms": 100,
                },
            },
            {"id": "historian", "kind": "destination", "inputs": ["opcua"], "connector_type": "historian"},
        ],
        "schedule": {"type": "real_time", "trigger": "data_arrival", "max_latency_ms": 200},
    }


def points(chart, tag: str) -> int:
    return len(chart.series(tag)[0])


def double_click(qtbot, tree, item) -> None:
    tree.scrollToItem(item)
    rect = tree.visualItemRect(item)  # spans every column, wider than the view: click on the name
    center = QPoint(rect.left() + 20, rect.center().y())
    # QTest's double-click alone is not seen as one by item views: press/release first, as a mouse does.
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=center)
    qtbot.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=center)


def test_live_view_charts_a_simulators_tags(qtbot, window, engine, simulator, tmp_path, artifacts):
    page = window.show_page("live")
    assert page.stack.currentWidget() is page.empty  # nothing streams yet

    job = engine.start_stream(stream_spec(simulator))
    try:
        # The tag browser lists every simulator tag under its source, with values.
        qtbot.waitUntil(lambda: len(page.browser.tags()) == 12, timeout=20_000)
        assert page.stack.currentWidget() is page.content
        qtbot.waitUntil(lambda: page.browser.sources() == ["opcua"], timeout=10_000)  # from the historian
        item = page.browser.item("Turbine01.Power")
        assert item is not None and item.text(2) == "good" and item.text(1) not in ("", "—")

        # Double-click charts the tag; its curve grows as the stream goes on.
        double_click(qtbot, page.browser.tree, item)
        assert len(page.charts) == 1 and page.charts[0].tags == ["Turbine01.Power"]
        chart = page.charts[0]
        qtbot.waitUntil(lambda: points(chart, "Turbine01.Power") > 3, timeout=10_000)
        before = points(chart, "Turbine01.Power")
        qtbot.waitUntil(lambda: points(chart, "Turbine01.Power") > before + 3, timeout=10_000)
        # The curve draws the points in view (few here: no downsampling needed, all of them drawn).
        curve = chart.curves["Turbine01.Power"]
        drawn_x, _ = curve.getData()
        (x0, x1), _ = chart.viewRange()
        inside = [x for x in chart.series("Turbine01.Power")[0] if x0 <= x <= x1]
        assert len(inside) > 0 and set(inside) <= set(drawn_x)

        # A second chart, linked on X, with another tag.
        qtbot.mouseClick(page.add_chart_button, Qt.MouseButton.LeftButton)
        double_click(qtbot, page.browser.tree, page.browser.item("Turbine02.WindSpeed"))
        assert page.charts[1].tags == ["Turbine02.WindSpeed"]
        qtbot.waitUntil(lambda: points(page.charts[1], "Turbine02.WindSpeed") > 3, timeout=10_000)
        assert page.charts[1].getViewBox().linkedView(0) is chart.getViewBox()

        # Throughput of the running pipeline (from its stream_stats events).
        qtbot.waitUntil(lambda: "windfarm live" in page.throughput.pipelines(), timeout=10_000)
        qtbot.waitUntil(lambda: page.throughput.series("windfarm live")[1].max() > 0, timeout=10_000)

        # Values of bad quality are shaded on the trace; the tag shows its quality.
        simulator.flip_quality("bad")
        try:
            qtbot.waitUntil(lambda: len(chart.shaded_spans) >= 1, timeout=10_000)
            qtbot.waitUntil(lambda: page.browser.item("Turbine01.Power").text(2) == "bad", timeout=5_000)
        finally:
            simulator.flip_quality("good")
        qtbot.waitUntil(lambda: page.browser.item("Turbine01.Power").text(2) == "good", timeout=10_000)
        qtbot.wait(1500)  # some good values after the bad span, for the picture
        shot = artifacts / "live.png"
        window.grab().save(str(shot))
        assert shot.stat().st_size > 10_000

        # Pause freezes the charts; resume continues.
        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
        assert page.paused and page.pause_button.text() == "Resume"
        frozen = points(chart, "Turbine01.Power")
        qtbot.wait(1200)
        assert points(chart, "Turbine01.Power") == frozen

        # The crosshair reads the value at a point of the curve, on both charts.
        x, y, _ = chart.series("Turbine01.Power")
        chart.crosshair_moved.emit(float(x[-2]))
        assert f"Turbine01.Power: {y[-2]:.6g}" in page.readout.text()
        assert "Turbine02.WindSpeed:" in page.readout.text()

        # Export the visible data (paused: exactly what is on screen).
        csv_path = tmp_path / "visible.csv"
        page.export_csv(csv_path).result(10)
        exported = pl.read_csv(csv_path)
        visible = sum(len(s[0]) for c in page.charts for s in c.visible().values())
        assert exported.height == visible > 0
        assert set(exported["tag"]) == {"Turbine01.Power", "Turbine02.WindSpeed"}
        assert set(exported["quality"]) <= {"good", "uncertain", "bad"}
        power = exported.filter(pl.col("tag") == "Turbine01.Power")["value"].to_numpy()
        shown = chart.visible()["Turbine01.Power"][1]
        assert np.allclose(power, shown, equal_nan=True)
        png_path = tmp_path / "charts.png"
        page.export_png(png_path).result(10)
        assert png_path.stat().st_size > 1000

        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
        assert not page.paused
        qtbot.waitUntil(lambda: points(chart, "Turbine01.Power") > frozen, timeout=10_000)
    finally:
        engine.stop_stream(job.id)
        record = job.result(30)
    assert record["status"] == "cancelled" and record["rows_out"] > 0  # stopped by the user
    qtbot.waitUntil(lambda: engine.throughput() == {}, timeout=5_000)  # no longer running
    page.shutdown()
    qtbot.waitUntil(lambda: page.idle, timeout=5_000)


def test_window_switching_reads_the_historian_for_the_older_part(qtbot, window, engine):
    now = datetime.now(UTC)
    # 50 minutes of history every 10 s (with a bad span), of which the ring buffer has the last 5 s.
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
    engine.live_buffer().append(recent)

    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.browser.tags() == ["plant.temp"], timeout=10_000)
    qtbot.waitUntil(lambda: page.browser.sources() == ["plc"], timeout=10_000)
    page.window_box.setCurrentText("1 min")
    chart = page.add_tags(["plant.temp"])
    # 1 min: the ring buffer's 5 points and the historian's 10-s values of the last minute.
    qtbot.waitUntil(lambda: points(chart, "plant.temp") >= 5 + 5, timeout=10_000)
    assert points(chart, "plant.temp") <= 5 + 6
    assert chart.shaded_spans == []

    page.window_box.setCurrentText("1 h")  # as the user picks it
    qtbot.waitUntil(lambda: points(chart, "plant.temp") > 250, timeout=10_000)
    x, y, _ = chart.series("plant.temp")
    assert np.all(np.diff(x) > 0) and y[-1] == 30.0
    assert x[0] < now.timestamp() - 2900  # reaches back to the start of the stored history
    # The bad values are shaded (one span around minute -25), and not drawn as values.
    spans = chart.shaded_spans
    assert len(spans) == 1
    assert now.timestamp() - 1510 < spans[0][0] < now.timestamp() - 1490
    (x0, x1), _ = chart.viewRange()
    assert x1 - x0 == pytest.approx(3600, rel=0.01)

    page.window_box.setCurrentText("10 min")
    qtbot.waitUntil(lambda: 55 <= points(chart, "plant.temp") <= 70, timeout=10_000)


def test_tags_dropped_on_a_chart_are_charted(qtbot, window, engine):
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
    engine.live_buffer().append(frame)
    page = window.show_page("live")
    qtbot.waitUntil(lambda: page.browser.sources() == ["a", "b"], timeout=10_000)
    chart = page.add_chart()
    items = [page.browser.item("a.two"), page.browser.item("b.three")]
    mime = page.browser.tree.mimeData(items)
    drop = QDropEvent(
        QPointF(20, 20),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    chart.dropEvent(drop)
    assert chart.tags == ["a.two", "b.three"]
    qtbot.waitUntil(lambda: points(chart, "b.three") == 1, timeout=5_000)


def test_empty_state_leads_to_the_pipelines(qtbot, window):
    page = window.show_page("live")
    qtbot.wait(600)  # a tag refresh has come back: still nothing live
    assert page.stack.currentWidget() is page.empty
    assert "No tags are live" in page.empty.label.text()
    qtbot.mouseClick(page.empty.button, Qt.MouseButton.LeftButton)
    assert window.current_page_name() == "pipelines"


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
    qtbot.waitUntil(lambda: last.text(1) == "999", timeout=2_000)
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
