"""Live page: watch the plant. A tag browser (tree per source, newest value, quality and time) on the
left; synchronized tag charts and a throughput chart of the running pipelines on the right.

Where the data comes from (engine/api/live.py): the tag list is `live.tags()` on a worker thread
twice a second; the charts read the ring buffers (`live.window`, in memory, a copy under a lock)
five times a second, and the part of the chosen window older than the ring buffer comes from the
historian (`live.chart_series`, on a worker, re-read every few seconds). The Qt thread does no I/O:
exports write their files on the engine's workers too.

Paused, the charts keep the window they showed (`_end_us` is frozen): a window picked, a tag added
or an export made while paused all work on that same stretch of time.
"""

from __future__ import annotations

import os
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
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ui.errors import one_line
from ui.live.charts import TagChart, ThroughputChart
from ui.live.tag_browser import TagBrowser
from ui.pages.base import Page
from ui.preferences import Preferences
from ui.widgets.empty_state import EmptyState

WINDOWS = {"1 min": 60, "10 min": 600, "1 h": 3_600, "24 h": 86_400}
TICK_MS = 50  # one precise timer drives the page; its work is spread over the ticks:
CHARTS_EVERY_TICKS = 4  # the charts, 5x/s, on ticks 0, 4, 8, ...
TAGS_EVERY_TICKS = 10  # the tag browser, 2x/s, on ticks 5, 15, 25, ...: never with the charts'
TAGS_PHASE = 5
HISTORY_EVERY_S = 10.0  # the historian part of the window is re-read this often
QUALITY_NAMES = np.array(["good", "uncertain", "bad"])
LOADING_TEXT = "Reading the live tags…"
EXPORTING = "Exporting…"  # an export button's text while its file is written
ERROR_COLOR = "#d64545"  # readable on the light and the dark theme
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
        self._history_pending = False  # another read was asked for while one ran
        self._history_announced = False  # the user asked for the running read: say when it is done
        self._tags_busy = False
        self._tags_loaded = False  # the first tag list has come back (until then: "Reading…")
        self._frozen_us: int | None = None  # the end of the shown window while paused
        self._notes: dict[str, tuple[str, bool]] = {}  # status line parts: key -> (text, is error)
        self.tag_rows: list[dict] = []
        self._export_dir: Path | None = None  # where the last export went: the next one starts there
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
        # Loading and error notes (historian reads, a failed tag read): one line, full text as tooltip.
        self.status = QLabel("")
        self.status.setObjectName("LiveStatus")
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar.addWidget(self.status, 1)
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
        self.clear_button.clicked.connect(self.ask_clear_charts)
        bar.addWidget(self.clear_button)
        self.csv_button = QPushButton("Export CSV")
        self.csv_button.setToolTip("Write the points the charts show to a CSV file")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        bar.addWidget(self.csv_button)
        self.png_button = QPushButton("Export PNG")
        self.png_button.setToolTip("Save a picture of the charts")
        self.png_button.clicked.connect(lambda: self.export_png())
        bar.addWidget(self.png_button)
        outer.addLayout(bar)

        self.stack = QStackedWidget()
        self.loading = EmptyState(LOADING_TEXT)
        self.stack.addWidget(self.loading)
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
        content.setSizes([460, 780])
        self.stack.addWidget(content)
        self.content = content
        self.stack.setCurrentWidget(self.loading)
        outer.addWidget(self.stack, 1)
        self._update_actions()
        # Times in the Settings page's time zone: the tag list, the time axes and the read-out.
        self.prefs = Preferences.of(self.main_window)
        self.prefs.changed.connect(lambda _values: self._apply_zone())
        self._apply_zone()

    def _apply_zone(self) -> None:
        zone = self.prefs.zone
        self.browser.zone = zone
        for plot in (*self.charts, self.throughput):
            plot.set_zone(zone)

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
            self.bridge.call(self.engine.call(self.engine.live.tags), self._got_tags, self._tags_failed)
        if not self.paused:
            self.throughput.add_sample(time.time(), self.engine.live.throughput())  # in memory: no I/O

    def _got_tags(self, rows: list[dict]) -> None:
        self._tags_busy = False
        self._tags_loaded = True
        self._note("tags")
        self.tag_rows = rows
        self.browser.update_tags(rows)
        self._show_content(bool(rows) or bool(self.charts))

    def _tags_failed(self, exc: BaseException) -> None:
        self._tags_busy = False
        self._tags_loaded = True
        self._note("tags", f"Live tags could not be read: {one_line(exc)}", error=True)
        self._show_content(bool(self.tag_rows) or bool(self.charts))

    def _show_content(self, content: bool) -> None:
        if content:
            self.stack.setCurrentWidget(self.content)
        else:
            self.stack.setCurrentWidget(self.empty if self._tags_loaded else self.loading)

    def _note(self, key: str, text: str | None = None, error: bool = False) -> None:
        """Set (or, without `text`, drop) one part of the status line; errors are shown first, in red."""
        note = (text, error) if text else None
        if self._notes.get(key) == note:
            return  # the usual case, twice a second from the tag list: nothing to redo
        if note is None:
            del self._notes[key]
        else:
            self._notes[key] = note
        notes = sorted(self._notes.values(), key=lambda item: not item[1])
        line = "  ·  ".join(text for text, _ in notes)
        self.status.setText(line)
        self.status.setToolTip(line)
        self.status.setStyleSheet(f"color: {ERROR_COLOR};" if any(e for _, e in notes) else "")

    def _update_actions(self) -> None:
        """Exports and clearing need a chart; their tooltips say so while there is none."""
        has_charts = bool(self.charts)
        for button in (self.csv_button, self.png_button, self.clear_button):
            button.setEnabled(has_charts and button.text() != EXPORTING)  # a running export re-enables
        self.clear_button.setToolTip("Remove every chart" if has_charts else "No charts yet")

    # ---- charts -------------------------------------------------------------------------------
    def add_chart(self) -> TagChart:
        chart = TagChart()
        chart.set_zone(self.prefs.zone)
        chart.tags_dropped.connect(lambda tags, c=chart: self.add_tags(tags, c))
        chart.crosshair_moved.connect(self._crosshair)
        chart.tag_removed.connect(lambda _tag: self.refresh_charts(force=True))
        chart.remove_requested.connect(lambda c=chart: self.remove_chart(c))
        if self.charts:
            chart.setXLink(self.charts[0])  # one X axis for every chart
        else:
            self.throughput.setXLink(chart)
        self.charts.append(chart)
        self.chart_area.addWidget(chart)
        self.target = chart
        self.hint.setVisible(False)
        self._show_content(True)
        self._update_actions()
        return chart

    def remove_chart(self, chart: TagChart) -> None:
        """Take one chart off the page; the others stay linked on X (to the new first chart)."""
        if chart not in self.charts:
            return
        self.charts.remove(chart)
        chart.setXLink(None)
        chart.setParent(None)
        chart.deleteLater()
        if self.charts:
            first = self.charts[0]
            first.setXLink(None)
            for other in self.charts[1:]:
                other.setXLink(first)
            self.throughput.setXLink(first)
        else:
            self.throughput.setXLink(None)
            self.hint.setVisible(True)
        if self.target is chart:
            self.target = self.charts[-1] if self.charts else None
        self._update_actions()
        self.refresh_charts(force=True)

    def add_tags(self, tags: list[str], chart: TagChart | None = None) -> TagChart:
        """Chart `tags` on `chart` (default: the last chart used; a first chart is made)."""
        chart = chart or self.target or self.add_chart()
        self.target = chart
        for tag in tags:
            if tag not in chart.curves:
                chart.add_curve(tag)
        self.refresh_charts(force=True)
        self.fetch_history(announce=True)
        return chart

    def ask_clear_charts(self) -> None:
        """The Clear charts button: the chart layout is the user's work, so ask first."""
        count = len(self.charts)
        if count and self.main_window.confirm(
            "Clear charts?",
            f"Remove all {count} chart{'s' if count != 1 else ''} from the Live page? "
            "The tags and their stored values are not touched.",
            True,
            "Clear",
        ):
            self.clear_charts()

    def clear_charts(self) -> None:
        self.throughput.setXLink(None)
        for chart in self.charts:
            chart.setParent(None)
            chart.deleteLater()
        self.charts, self.target, self._history = [], None, {}
        self.hint.setVisible(True)
        self.readout.setText("")
        self._update_actions()
        self._show_content(bool(self.tag_rows))

    def chart_tags(self) -> list[str]:
        return list(dict.fromkeys(t for c in self.charts for t in c.tags))

    def set_window(self, label: str) -> None:
        self.window_s = WINDOWS[label]
        if self.window_box.currentText() != label:
            self.window_box.setCurrentText(label)
        self._history = {}
        self.fetch_history(announce=True)
        self.refresh_charts(force=True)
        if self.paused and self.charts:  # not following the clock: show the new window's span here
            end_s = self._end_us() / 1e6
            self.charts[0].setXRange(end_s - self.window_s, end_s, padding=0)
            for chart in self.charts:
                chart.fit_y()

    def set_paused(self, paused: bool) -> None:
        if paused and not self.paused:
            # Frozen where the charts stand (the last refresh set their range to end about now).
            self._frozen_us = (
                int(self.charts[0].viewRange()[0][1] * 1e6) if self.charts else time.time_ns() // 1000
            )
        self.paused = paused
        if not paused:
            self._frozen_us = None
        self.pause_button.setText("Resume" if paused else "Pause")
        if self.pause_button.isChecked() != paused:
            self.pause_button.setChecked(paused)

    def _end_us(self) -> int:
        """The end of the shown window: now, or where the charts were paused."""
        return self._frozen_us if self.paused and self._frozen_us is not None else time.time_ns() // 1000

    def fetch_history(self, announce: bool = False) -> None:
        """Read the historian's part of the window for the charted tags (on a worker). With
        `announce` (the user asked: a window picked, a tag charted) the status line says so until
        it is in. A read asked for while one runs follows it (its tags or window are newer)."""
        tags = self.chart_tags()
        if not tags:
            return
        if announce:
            self._history_announced = True
            self._note("history", f"Reading {self.window_box.currentText()} of history…")
        if self._history_busy:
            self._history_pending = True
            return
        self._history_busy = True
        self._history_pending = False
        self._history_at = time.monotonic()
        window, end_us = self.window_s, self._end_us()

        def done(series: dict) -> None:
            self._history_busy = False
            if window == self.window_s:
                self._history.update(series)
                self.refresh_charts(force=True)
            self._history_settled()

        def failed(exc: BaseException) -> None:
            self._history_busy = False
            message = f"Historian read failed: {one_line(exc)}"
            if self._history_announced:
                self.toast("error", message)
            self._history_announced = False
            self._history_pending = False
            self._note("history", message, error=True)

        self.bridge.call(
            self.engine.call(self.engine.live.chart_series, tags, window, now_us=end_us), done, failed
        )

    def _history_settled(self) -> None:
        if self._history_pending:
            self.fetch_history()
            return
        self._history_announced = False
        self._note("history")

    def refresh_charts(self, force: bool = False) -> None:
        """Redraw every chart from the ring buffer (recent part) and the cached historian part."""
        if (self.paused and not force) or not self.charts:
            return
        now_us = self._end_us()
        since_us = now_us - int(self.window_s * 1e6)
        follow = not self.paused
        # Every chart's tags in one call, not one per tag (the buffer look-up costs file system calls).
        windows = self.engine.live.windows({tag for chart in self.charts for tag in chart.tags}, since_us)
        for chart in self.charts:
            for tag in chart.tags:
                chart.set_series(tag, *self._series(tag, since_us, windows[tag]), draw=False)
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

    def _series(self, tag: str, since_us: int, window: tuple):
        """The ring buffer's `window` of `tag`, preceded by the cached historian part."""
        ts, values, quality = window
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
        if not self.charts:
            self.toast("warning", "Nothing to export: chart some tags first.")
            return None
        path = path or self._ask_path("Export visible data", "CSV files (*.csv)", ".csv")
        if not path:
            return None
        frame = self.visible_frame()
        return self._write(
            self.csv_button,
            lambda: _write_csv(frame, Path(path)),
            f"Exported {frame.height} points to {path}",
            "CSV export failed",
        )

    def export_png(self, path: str | Path | None = None) -> Future | None:
        """Save a picture of the charts (asks for a file without `path`); the file is written on a worker."""
        if not self.charts:
            self.toast("warning", "Nothing to export: chart some tags first.")
            return None
        path = path or self._ask_path("Export charts as PNG", "PNG images (*.png)", ".png")
        if not path:
            return None
        image = self.chart_area.parentWidget().grab().toImage()  # painting is Qt-thread work

        def save() -> None:
            if not image.save(str(path), "PNG"):
                raise OSError(f"{path}: the image could not be written (does the folder exist?)")

        return self._write(self.png_button, save, f"Saved {path}", "PNG export failed")

    def _write(self, button: QPushButton, write, success: str, failure: str) -> Future:
        """Run `write` on a worker; `button` reads "Exporting…" (and is disabled) until it is done."""
        text = button.text()
        button.setEnabled(False)
        button.setText(EXPORTING)

        def finished(kind: str, message: str) -> None:
            button.setText(text)
            button.setEnabled(bool(self.charts))
            self.toast(kind, message)

        future = self.engine.call(write)
        self.bridge.call(
            future,
            lambda _: finished("success", success),
            lambda exc: finished("error", f"{failure}: {one_line(exc)}"),
        )
        return future

    def _ask_path(self, caption: str, pattern: str, suffix: str) -> str | None:
        """A save dialog on a time-stamped name, in the folder of the last export (home at first)."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        default = str((self._export_dir or Path.home()) / f"live-{stamp}{suffix}")
        path, _ = QFileDialog.getSaveFileName(self, caption, default, pattern)
        if path:
            self._export_dir = Path(path).parent
        return path or None


def _write_csv(frame, path: Path) -> None:
    """The CSV written whole or not at all (a hidden file beside it, renamed over it), and a
    missing folder said with the full path (Polars' own message shortens a long one)."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder does not exist")
    part = path.with_name(f".{path.name}.part")
    try:
        frame.write_csv(str(part))
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
