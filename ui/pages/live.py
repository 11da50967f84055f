"""Live page: watch the plant. A tag browser (tree per source, newest value, quality and time) on the
left; synchronized tag charts and a throughput chart of the running pipelines on the right.

Where the data comes from (engine/api/live.py): the tag list is `live_tags()` on a worker thread
twice a second; the charts read the ring buffers (`live_window`, in memory, a copy under a lock)
five times a second, and the part of the chosen window older than the ring buffer comes from the
historian (`chart_series`, on a worker, re-read every few seconds). The Qt thread does no I/O:
exports write their files on the engine's workers too.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ui.live.charts import TagChart, ThroughputChart
from ui.live.tag_browser import TagBrowser
from ui.pages.base import Page
from ui.widgets.empty_state import EmptyState

WINDOWS = {"1 min": 60, "10 min": 600, "1 h": 3_600, "24 h": 86_400}
TICK_MS = 50  # one precise timer drives the page; its work is spread over the ticks:
CHARTS_EVERY_TICKS = 4  # the charts, 5x/s, on ticks 0, 4, 8, ...
TAGS_EVERY_TICKS = 10  # the tag browser, 2x/s, on ticks 5, 15, 25, ...: never with the charts'
TAGS_PHASE = 5
HISTORY_EVERY_S = 10.0  # the historian part of the window is re-read this often
QUALITY_NAMES = np.array(["good", "uncertain", "bad"])
EMPTY_TEXT = (
    "No tags are live.\n\nStart a real-time pipeline that writes into the historian "
    "(for example the OPC UA to historian template); its tags appear here as values arrive."
)


class LivePage(Page):
    title = "Live"
    icon_name = "live"

    def __init__(self, window):
        super().__init__(window)
        self.window_s = WINDOWS["1 min"]
        self.paused = False
        self.charts: list[TagChart] = []
        self.target: TagChart | None = None  # the chart a double-clicked tag goes to
        self._history: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._history_at = float("-inf")
        self._history_busy = False
        self._tags_busy = False
        self.tag_rows: list[dict] = []
        self._build()
        # One timer, not one per job: two coarse timers of 200 and 500 ms fire in the same loop
        # pass every second (Qt even aligns coarse timers on purpose), and the two handlers plus
        # the repaint they cause held the loop for over 50 ms under load.
        self._ticks = 0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    # ---- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 12, 12, 12)
        bar = QHBoxLayout()
        heading = QLabel("Live")
        heading.setObjectName("PageTitle")
        bar.addWidget(heading)
        bar.addStretch(1)
        bar.addWidget(QLabel("Window"))
        self.window_box = QComboBox()
        self.window_box.addItems(list(WINDOWS))
        self.window_box.setCurrentText("1 min")
        self.window_box.currentTextChanged.connect(self.set_window)
        bar.addWidget(self.window_box)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Freeze the charts (the tag list keeps updating)")
        self.pause_button.toggled.connect(self.set_paused)
        bar.addWidget(self.pause_button)
        self.add_chart_button = QPushButton("Add chart")
        self.add_chart_button.clicked.connect(lambda: self.add_chart())
        bar.addWidget(self.add_chart_button)
        self.clear_button = QPushButton("Clear charts")
        self.clear_button.clicked.connect(self.clear_charts)
        bar.addWidget(self.clear_button)
        self.csv_button = QPushButton("Export CSV")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        bar.addWidget(self.csv_button)
        self.png_button = QPushButton("Export PNG")
        self.png_button.clicked.connect(lambda: self.export_png())
        bar.addWidget(self.png_button)
        outer.addLayout(bar)

        self.stack = QStackedWidget()
        self.empty = EmptyState(EMPTY_TEXT, "Open pipelines", lambda: self.main_window.show_page("pipelines"))
        self.stack.addWidget(self.empty)
        content = QSplitter(Qt.Orientation.Horizontal)
        self.browser = TagBrowser()
        self.browser.tag_activated.connect(lambda tag: self.add_tags([tag]))
        content.addWidget(self.browser)
        right = QWidget()
        column = QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        self.hint = QLabel("Double-click a tag, or drag tags onto a chart, to chart them.")
        self.hint.setObjectName("Hint")
        column.addWidget(self.hint)
        self.chart_area = QSplitter(Qt.Orientation.Vertical)
        self.chart_area.setChildrenCollapsible(False)
        column.addWidget(self.chart_area, 1)
        self.throughput = ThroughputChart()
        self.throughput.setMaximumHeight(170)
        self.throughput.setTitle("Throughput (rows/s per pipeline)", size="9pt")
        column.addWidget(self.throughput)
        self.readout = QLabel("")
        self.readout.setObjectName("Readout")
        column.addWidget(self.readout)
        content.addWidget(right)
        content.setStretchFactor(1, 3)
        content.setSizes([440, 800])
        self.stack.addWidget(content)
        self.content = content
        outer.addWidget(self.stack, 1)

    # ---- visibility: timers run only while the page is shown ---------------------------------
    def on_show(self) -> None:
        self.refresh_tags()

    def showEvent(self, event):
        super().showEvent(event)
        self._timer.start()

    def hideEvent(self, event):
        super().hideEvent(event)
        self._timer.stop()

    def shutdown(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        """At most one of the page's jobs per loop pass (looked up per call: benchmarks wrap them)."""
        tick, self._ticks = self._ticks, self._ticks + 1
        if tick % CHARTS_EVERY_TICKS == 0:
            self.refresh_charts()
        elif tick % TAGS_EVERY_TICKS == TAGS_PHASE:
            self.refresh_tags()

    @property
    def idle(self) -> bool:
        """No engine call of this page is in flight."""
        return not (self._tags_busy or self._history_busy)

    # ---- the tag list and throughput (2x/s) -----------------------------------------------------
    def refresh_tags(self) -> None:
        if not self._tags_busy:
            self._tags_busy = True
            self.bridge.call(self.engine.call(self.engine.live_tags), self._got_tags, self._tags_failed)
        if not self.paused:
            self.throughput.add_sample(time.time(), self.engine.throughput())  # in memory: no I/O

    def _got_tags(self, rows: list[dict]) -> None:
        self._tags_busy = False
        self.tag_rows = rows
        self.browser.update_tags(rows)
        self._show_content(bool(rows) or bool(self.charts))

    def _tags_failed(self, exc: BaseException) -> None:
        self._tags_busy = False
        self.hint.setText(f"Live tags could not be read: {exc}")

    def _show_content(self, content: bool) -> None:
        self.stack.setCurrentWidget(self.content if content else self.empty)

    # ---- charts -------------------------------------------------------------------------------
    def add_chart(self) -> TagChart:
        chart = TagChart()
        chart.tags_dropped.connect(lambda tags, c=chart: self.add_tags(tags, c))
        chart.crosshair_moved.connect(self._crosshair)
        if self.charts:
            chart.setXLink(self.charts[0])  # one X axis for every chart
        else:
            self.throughput.setXLink(chart)
        self.charts.append(chart)
        self.chart_area.addWidget(chart)
        self.target = chart
        self.hint.setVisible(False)
        self._show_content(True)
        return chart

    def add_tags(self, tags: list[str], chart: TagChart | None = None) -> TagChart:
        """Chart `tags` on `chart` (default: the last chart used; a first chart is made)."""
        chart = chart or self.target or self.add_chart()
        self.target = chart
        for tag in tags:
            if tag not in chart.curves:
                chart.add_curve(tag)
        self.refresh_charts(force=True)
        self.fetch_history()
        return chart

    def clear_charts(self) -> None:
        self.throughput.setXLink(None)
        for chart in self.charts:
            chart.setParent(None)
            chart.deleteLater()
        self.charts, self.target, self._history = [], None, {}
        self.hint.setVisible(True)
        self._show_content(bool(self.tag_rows))

    def chart_tags(self) -> list[str]:
        return list(dict.fromkeys(t for c in self.charts for t in c.tags))

    def set_window(self, label: str) -> None:
        self.window_s = WINDOWS[label]
        if self.window_box.currentText() != label:
            self.window_box.setCurrentText(label)
        self._history = {}
        self.fetch_history()
        self.refresh_charts(force=True)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.pause_button.setText("Resume" if paused else "Pause")
        if self.pause_button.isChecked() != paused:
            self.pause_button.setChecked(paused)

    def fetch_history(self) -> None:
        """Read the historian's part of the window for the charted tags (on a worker)."""
        tags = self.chart_tags()
        if not tags or self._history_busy:
            return
        self._history_busy = True
        self._history_at = time.monotonic()
        window = self.window_s

        def done(series: dict) -> None:
            self._history_busy = False
            if window == self.window_s:
                self._history.update(series)
                self.refresh_charts(force=True)

        def failed(exc: BaseException) -> None:
            self._history_busy = False
            self.toast("error", f"Historian read failed: {exc}")

        self.bridge.call(self.engine.chart_series(tags, window), done, failed)

    def refresh_charts(self, force: bool = False) -> None:
        """Redraw every chart from the ring buffer (recent part) and the cached historian part."""
        if (self.paused and not force) or not self.charts:
            return
        now_us = time.time_ns() // 1000
        since_us = now_us - int(self.window_s * 1e6)
        follow = not self.paused
        # Looked up once a refresh, not per tag: the lookup resolves the data directory's path
        # (file system calls, each letting an engine thread take the GIL from the Qt thread).
        buffer = self.engine.live_buffer()
        for chart in self.charts:
            for tag in chart.tags:
                chart.set_series(tag, *self._series(tag, since_us, buffer), draw=False)
            chart.shade_bad_quality()
            if follow:
                chart.fit_y()
        if follow:  # linked charts follow; each draws its new visible points once, here
            self.charts[0].setXRange(since_us / 1e6, now_us / 1e6, padding=0)
        for chart in self.charts:
            chart.draw()  # those whose X range did not move (paused, forced) draw their new data
        # Settle the new ranges now: pyqtgraph applies them when painting, and the clipped curves
        # that react to them would ask for a second paint of every chart in the same frame.
        for chart in (*self.charts, self.throughput):
            chart.getViewBox().prepareForPaint()
        if time.monotonic() - self._history_at > HISTORY_EVERY_S:
            self.fetch_history()

    def _series(self, tag: str, since_us: int, buffer=None):
        buffer = buffer if buffer is not None else self.engine.live_buffer()
        ts, values, quality = buffer.window(tag, since_us)
        older = self._history.get(tag)
        if older is None:
            return ts, values, quality
        h_ts, h_values, h_quality = older
        until = ts[0] if len(ts) else np.iinfo(np.int64).max
        keep = (h_ts >= since_us) & (h_ts < until)
        if not keep.any():
            return ts, values, quality
        return (
            np.concatenate((h_ts[keep], ts)),
            np.concatenate((h_values[keep], values)),
            np.concatenate((h_quality[keep], quality)),
        )

    def _crosshair(self, x: float) -> None:
        texts = [chart.show_crosshair(x) for chart in self.charts]
        lines = [line for text in texts for line in text.splitlines()[1:]]
        self.readout.setText("  ·  ".join([texts[0].splitlines()[0], *lines]) if texts else "")

    # ---- export -------------------------------------------------------------------------------
    def visible_frame(self):
        """The visible points of every chart: chart, tag, timestamp (UTC), value, quality."""
        import polars as pl

        parts = []
        for number, chart in enumerate(self.charts, start=1):
            for tag, (x, y, q) in chart.visible().items():
                parts.append(
                    pl.DataFrame(
                        {
                            "chart": np.full(len(x), number, dtype=np.int32),
                            "tag": [tag] * len(x),
                            "timestamp": (x * 1e6).round().astype(np.int64),
                            "value": y,
                            "quality": QUALITY_NAMES[np.minimum(q, 2)],
                        }
                    ).with_columns(pl.from_epoch("timestamp", time_unit="us").dt.replace_time_zone("UTC"))
                )
        if not parts:
            return pl.DataFrame(
                schema={
                    "chart": pl.Int32,
                    "tag": pl.String,
                    "timestamp": pl.Datetime("us", "UTC"),
                    "value": pl.Float64,
                    "quality": pl.String,
                }
            )
        return pl.concat(parts)

    def export_csv(self, path: str | Path | None = None) -> Future | None:
        """Write the visible data to CSV (asks for a file without `path`); the write runs on a worker."""
        path = path or self._ask_path("Export visible data", "CSV files (*.csv)", ".csv")
        if not path:
            return None
        frame = self.visible_frame()
        future = self.engine.call(lambda: frame.write_csv(str(path)))
        self.bridge.call(
            future,
            lambda _: self.toast("success", f"Exported {frame.height} points to {path}"),
            lambda exc: self.toast("error", f"CSV export failed: {exc}"),
        )
        return future

    def export_png(self, path: str | Path | None = None) -> Future | None:
        """Save a picture of the charts (asks for a file without `path`); the file is written on a worker."""
        path = path or self._ask_path("Export charts as PNG", "PNG images (*.png)", ".png")
        if not path:
            return None
        image = self.chart_area.parentWidget().grab().toImage()  # painting is Qt-thread work

        def save() -> None:
            if not image.save(str(path), "PNG"):
                raise OSError(f"{path}: the image could not be written")

        future = self.engine.call(save)
        self.bridge.call(
            future,
            lambda _: self.toast("success", f"Saved {path}"),
            lambda exc: self.toast("error", f"PNG export failed: {exc}"),
        )
        return future

    def _ask_path(self, caption: str, pattern: str, suffix: str) -> str | None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        default = str(Path.home() / f"live-{stamp}{suffix}")
        path, _ = QFileDialog.getSaveFileName(self, caption, default, pattern)
        return path or None
