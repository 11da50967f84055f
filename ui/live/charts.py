"""Live charts (pyqtgraph): tag trends with bad-quality spans shaded, a crosshair read-out, and
the throughput of running pipelines.

Every chart draws the visible part of each curve only, peak-downsampled to two points a pixel column
(`peak_reduce`, one pass a frame done here: pyqtgraph's own clip-to-view and downsampling ran twice a
frame, on the data change and again on the X range change), so a curve of 10k points costs about
as much as the chart is wide in pixels. X is seconds since the epoch on a date axis;
charts of one page share it (`link_x`).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal

from ui.live.tag_browser import MIME_TAGS

PALETTE = (
    "#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16",
    "#f97316", "#6366f1", "#14b8a6", "#eab308", "#a855f7", "#22c55e", "#0ea5e9", "#e11d48",
)  # fmt: skip
BAD_BRUSH = (214, 69, 69, 45)  # bad-quality spans, translucent so the trace stays readable
MAX_SPANS = 200  # shaded spans per chart; beyond that neighbouring spans are merged
BAD = 2


def bad_spans(ts: np.ndarray, quality: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) x of each run of bad points: from its first point to the next point after it
    (or its last point when the run ends the series). Vectorised: no loop over points."""
    if len(ts) == 0:
        return []
    bad = (quality == BAD).astype(np.int8)
    edges = np.diff(np.concatenate(([0], bad, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # index after the run
    last = len(ts) - 1
    spans = [(float(ts[s]), float(ts[min(e, last)])) for s, e in zip(starts, ends, strict=True)]
    if len(spans) > MAX_SPANS:  # merge into MAX_SPANS groups of neighbours
        groups = np.array_split(np.arange(len(spans)), MAX_SPANS)
        spans = [(spans[g[0]][0], spans[g[-1]][1]) for g in groups]
    return spans


def opaque_over(rgba, background) -> tuple[int, int, int]:
    """The opaque colour that `rgba` (alpha 0-255) shows over an opaque `background`."""
    *rgb, alpha = rgba
    a = alpha / 255
    return tuple(round(c * a + b * (1 - a)) for c, b in zip(rgb, background, strict=True))


class SpanShade(pg.GraphicsObject):
    """Every shaded span of a chart in one item, painted as one path over the visible height
    (one LinearRegionItem per span costs a paint call each: 50 spans took ~12 ms a frame)."""

    def __init__(self, brush, background=(255, 255, 255)):
        super().__init__()
        # Painted opaque: the translucent colour already blended over the (plain) background. Qt
        # blends narrow translucent rects a scanline at a time (200 spans: ~6-12 ms a paint);
        # opaque ones are plain fills (~0.2 ms). The curves are drawn over the shade either way.
        self.brush = pg.mkBrush(opaque_over(brush, background))
        self.spans: list[tuple[float, float]] = []
        self.setZValue(-10)

    def set_spans(self, spans: list[tuple[float, float]]) -> None:
        self.prepareGeometryChange()
        self.spans = spans
        self.update()

    def boundingRect(self) -> QRectF:
        view = self.getViewBox()
        if not self.spans or view is None:
            return QRectF()
        top, bottom = view.viewRange()[1]
        x0, x1 = self.spans[0][0], self.spans[-1][1]
        return QRectF(x0, top, max(x1 - x0, 1e-9), bottom - top)

    def viewRangeChanged(self) -> None:
        self.prepareGeometryChange()

    def paint(self, painter, *_args) -> None:
        if not self.spans:
            return
        # In device pixels: a path in data coordinates (x ~ 1.7e9 s) rasterised at ~5 ms a paint.
        view = self.getViewBox()
        if view is None:
            return
        transform = painter.transform()
        low, high = view.viewRange()[1]
        y0, y1 = sorted((transform.map(QPointF(0, low)).y(), transform.map(QPointF(0, high)).y()))
        painter.save()
        painter.resetTransform()
        painter.setPen(Qt.PenStyle.NoPen)
        right = -1
        for start, end in self.spans:
            x0 = transform.map(QPointF(start, 0)).x()
            x1 = max(transform.map(QPointF(end, 0)).x(), x0 + 1)  # a span is at least a pixel wide
            if x1 <= right:
                continue  # inside the previous one at this zoom
            painter.fillRect(QRectF(max(x0, right), y0, x1 - max(x0, right), y1 - y0), self.brush)
            right = x1
        painter.restore()


def peak_reduce(
    x: np.ndarray, y: np.ndarray, x0: float, x1: float, columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """The points of (x, y) inside [x0, x1] (and one either side, so the line reaches the edges),
    as at most about 2 * `columns` points: each bucket of consecutive points gives its max and its
    min (a spike stays visible). `x` is ascending. The newest points past the last whole bucket are
    kept as they are, so the latest value is always drawn."""
    first = max(0, int(np.searchsorted(x, x0, "left")) - 1)
    last = min(len(x), int(np.searchsorted(x, x1, "right")) + 1)
    x, y = x[first:last], y[first:last]
    n = len(x)
    if n <= 2 * max(columns, 1):
        return x, y
    size = n // max(columns, 1)  # points per bucket (>= 2 here)
    buckets = n // size
    whole = y[: buckets * size].reshape(buckets, size)
    if size >= 32:  # long rows: numpy's row reduction is fast
        high, low = whole.max(axis=1), whole.min(axis=1)
    else:  # short rows: a few vector ops over columns beat a reduction per row
        high, low = whole[:, 0].copy(), whole[:, 0].copy()
        for k in range(1, size):
            np.maximum(high, whole[:, k], out=high)  # NaN propagates: a gap stays a gap
            np.minimum(low, whole[:, k], out=low)
    out_x = np.empty(2 * buckets + (n - buckets * size))
    out_y = np.empty_like(out_x)
    starts = x[: buckets * size : size]
    out_x[0 : 2 * buckets : 2] = starts
    out_x[1 : 2 * buckets : 2] = starts
    out_y[0 : 2 * buckets : 2] = high
    out_y[1 : 2 * buckets : 2] = low
    out_x[2 * buckets :] = x[buckets * size :]
    out_y[2 * buckets :] = y[buckets * size :]
    return out_x, out_y


def merge_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching spans as one (tags of a chart often go bad together: one shade)."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class _Plot(pg.PlotWidget):
    """A PlotWidget on a date axis with the live settings (downsampling, clip-to-view, crosshair)."""

    crosshair_moved = Signal(float)  # x under the mouse (charts of a page follow each other)

    def __init__(self, parent=None):
        super().__init__(parent, axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.zone: tzinfo | None = None  # the time axis's and read-out's zone (None: the computer's)
        self.setBackground("w")
        item = self.getPlotItem()
        # No grid: pyqtgraph draws it as translucent lines over the whole plot with every axis
        # paint, measured at half the frame time of a 20-curve page.
        # Clipping and downsampling are ours (`peak_reduce`, once a frame); pyqtgraph's are off.
        item.setDownsampling(auto=False)
        item.setClipToView(False)
        item.getAxis("left").setWidth(56)  # one width on every chart, so their X axes line up
        item.hideButtons()  # pyqtgraph's "A" (auto-range) would fight the page's window and Y fit
        self.legend = item.addLegend(offset=(8, 8), labelTextSize="8pt")
        self.cursor = pg.InfiniteLine(
            angle=90, movable=False, pen=pg.mkPen("#888", style=Qt.PenStyle.DashLine)
        )
        self.cursor.setVisible(False)
        self.cursor.setZValue(50)
        self.addItem(self.cursor, ignoreBounds=True)
        # Under the curves (which draw at Z 0) and over the shade: the box never hides a trace.
        self.readout = pg.TextItem(color="#222", anchor=(1, 0), fill=pg.mkBrush(255, 255, 255, 200))
        self.readout.setZValue(-5)
        self.readout.setVisible(False)
        self.addItem(self.readout, ignoreBounds=True)
        # A dot on each curve at the point the read-out gives, in the curve's colour.
        self.markers = pg.ScatterPlotItem(size=7, pen=pg.mkPen("w", width=1))
        self.markers.setZValue(55)
        self.markers.setVisible(False)
        self.addItem(self.markers, ignoreBounds=True)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._drawn: dict[str, tuple] = {}  # name -> (series version, x range, columns) last drawn
        self._versions: dict[str, int] = {}  # name -> a number bumped with every new series
        self.scene().sigMouseMoved.connect(self._mouse_moved)
        self.getViewBox().sigXRangeChanged.connect(lambda *_: self.draw())

    def add_curve(self, name: str, width: int = 1) -> pg.PlotDataItem:
        used = {c.opts["pen"].color().name() for c in self.curves.values()}
        # The first colour not on the chart: a tag charted after one was removed gets its own.
        color = next((c for c in PALETTE if c not in used), PALETTE[len(self.curves) % len(PALETTE)])
        curve = self.plot([], [], name=name, pen=pg.mkPen(color, width=width), connect="finite")
        curve.opts["dynamicRangeLimit"] = None  # Y is fitted to the data: no clipping pass on Y changes
        self.curves[name] = curve
        return curve

    def set_curve(
        self, name: str, x: np.ndarray, y: np.ndarray, quality: np.ndarray | None = None, draw: bool = True
    ) -> None:
        """Keep the full series of `name`; draw its visible part now, or with the next `draw()`
        (the page sets every series, then the X range, then draws: one pass a frame)."""
        if name not in self.curves:
            self.add_curve(name)
        self._series[name] = (x, y, quality if quality is not None else np.zeros(len(x), np.uint8))
        self._versions[name] = self._versions.get(name, 0) + 1
        if draw:
            self.draw()

    def draw(self) -> None:
        """Give each curve its visible points, peak-downsampled to the chart's width; curves whose
        data, X range and width did not change since they were last drawn are left alone."""
        view = self.getViewBox()
        (x0, x1), _ = view.viewRange()
        columns = max(100, int(view.width()) or 1000)
        for name, (x, y, _q) in self._series.items():
            key = (self._versions.get(name), x0, x1, columns)
            if self._drawn.get(name) == key:
                continue
            self._drawn[name] = key
            shown_x, shown_y = peak_reduce(x, y, x0, x1, columns)
            finite = bool(np.isfinite(shown_y).all())
            self.curves[name].setData(
                shown_x, shown_y, connect="all" if finite else "finite", skipFiniteCheck=finite
            )

    def fit_y(self) -> None:
        """Y range over the curves' values (set here, once per refresh: pyqtgraph's auto-range
        works it out again at paint time and paints every chart twice a frame)."""
        low, high = np.inf, -np.inf
        for _, y, _ in self._series.values():
            finite = y[np.isfinite(y)] if len(y) else y
            if len(finite):
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        if low <= high:
            self.getPlotItem().disableAutoRange(axis="y")
            self.setYRange(low, high, padding=0.05)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        empty = np.empty(0)
        return self._series.get(name, (empty, empty, np.empty(0, np.uint8)))

    def visible(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each curve's points inside the visible X range."""
        (x0, x1), _ = self.viewRange()
        out = {}
        for name, (x, y, q) in self._series.items():
            keep = (x >= x0) & (x <= x1)
            out[name] = (x[keep], y[keep], q[keep])
        return out

    def set_zone(self, zone: tzinfo | None) -> None:
        """Show times in `zone` (the Settings page's time zone; None: the computer's)."""
        self.zone = zone
        axis = self.getPlotItem().getAxis("bottom")
        offset = None if zone is None else datetime.now(zone).utcoffset()
        # pyqtgraph's utcOffset counts seconds west of UTC, as time.timezone does
        axis.utcOffset = None if offset is None else -int(offset.total_seconds())
        axis.picture = None
        axis.update()

    # ---- crosshair ---------------------------------------------------------------------------
    def _mouse_moved(self, pos) -> None:
        if not self.sceneBoundingRect().contains(pos) or not self.curves:
            self.hide_crosshair()
            return
        self.crosshair_moved.emit(self.getPlotItem().vb.mapSceneToView(pos).x())

    def show_crosshair(self, x: float) -> str:
        """The vertical line at `x` and a read-out of each curve's value nearest to it; returns the text."""
        lines = [datetime.fromtimestamp(x, tz=self.zone).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]]
        dots = []
        for name, (xs, ys, qs) in self._series.items():
            if len(xs) == 0:
                continue
            i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
            if i > 0 and abs(xs[i - 1] - x) < abs(xs[i] - x):
                i -= 1
            value = "—" if not np.isfinite(ys[i]) else f"{ys[i]:.6g}"
            flag = {1: " (uncertain)", 2: " (bad)"}.get(int(qs[i]), "")
            lines.append(f"{name}: {value}{flag}")
            if np.isfinite(ys[i]):
                color = self.curves[name].opts["pen"].color()
                dots.append({"pos": (float(xs[i]), float(ys[i])), "brush": pg.mkBrush(color)})
        text = "\n".join(lines)
        self.cursor.setPos(x)
        self.cursor.setVisible(True)
        self.markers.setData(dots)
        self.markers.setVisible(bool(dots))
        (x0, x1), (_, y1) = self.viewRange()
        self.readout.setText(text)
        # At the top, beside the line, on the side with more room: in the right half (where a live
        # chart's newest points are) the box goes left of the line, so it never hides them.
        self.readout.setAnchor((1, 0) if x > (x0 + x1) / 2 else (0, 0))
        self.readout.setPos(x, y1)
        self.readout.setVisible(True)
        return text

    def hide_crosshair(self) -> None:
        self.cursor.setVisible(False)
        self.readout.setVisible(False)
        self.markers.setVisible(False)


class TagChart(_Plot):
    """One chart of tags. Tags dropped on it (from the tag browser) are asked for by `tags_dropped`."""

    tags_dropped = Signal(list)
    tag_removed = Signal(str)  # "Remove <tag>" picked in the chart's right-click menu
    remove_requested = Signal()  # "Remove chart" picked there

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumHeight(160)
        self.shade = SpanShade(BAD_BRUSH)
        self.addItem(self.shade, ignoreBounds=True)
        self._spans: list[tuple[float, float]] = []
        # Pens come off a chart, and the chart off the page, from the right-click menu pyqtgraph
        # already shows on a chart (its zoom and export entries stay below ours).
        self.menu = self.getViewBox().menu
        self.menu.addSeparator()
        self._tag_actions: list = []
        self.remove_action = self.menu.addAction("Remove chart")
        self.remove_action.triggered.connect(self.remove_requested)
        self.menu.aboutToShow.connect(self._list_tags_in_menu)

    def _list_tags_in_menu(self) -> None:
        """One "Remove <tag>" entry per charted tag, above "Remove chart" (rebuilt each time the
        menu opens: the tags change)."""
        for action in self._tag_actions:
            self.menu.removeAction(action)
            action.deleteLater()
        self._tag_actions = []
        for tag in self.tags:
            action = self.menu.addAction(f"Remove {tag}")
            action.triggered.connect(lambda _checked=False, t=tag: self._remove_from_menu(t))
            self.menu.insertAction(self.remove_action, action)
            self._tag_actions.append(action)

    def _remove_from_menu(self, tag: str) -> None:
        self.remove_tag(tag)
        self.shade_bad_quality()
        self.tag_removed.emit(tag)

    @property
    def tags(self) -> list[str]:
        return list(self.curves)

    def set_series(
        self, tag: str, ts_us: np.ndarray, values: np.ndarray, quality: np.ndarray, draw: bool = True
    ) -> None:
        self.set_curve(tag, ts_us / 1e6, values, quality, draw)

    def remove_tag(self, tag: str) -> None:
        curve = self.curves.pop(tag, None)
        if curve is not None:
            self.removeItem(curve)
            self.legend.removeItem(curve)
            self._series.pop(tag, None)
            self._drawn.pop(tag, None)

    def shade_bad_quality(self) -> None:
        """Shade every bad span of every curve (one item; repainted only when the spans change)."""
        spans = merge_spans([span for x, _, q in self._series.values() for span in bad_spans(x, q)])
        if spans == self._spans:
            return
        self._spans = spans
        self.shade.set_spans(spans)

    @property
    def shaded_spans(self) -> list[tuple[float, float]]:
        return list(self._spans)

    # ---- drops from the tag browser ----------------------------------------------------------
    def dragEnterEvent(self, event):
        if event.mimeData().hasFormat(MIME_TAGS) or event.mimeData().hasText():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event):
        event.acceptProposedAction()

    def dropEvent(self, event):
        data = event.mimeData()
        raw = bytes(data.data(MIME_TAGS)).decode() if data.hasFormat(MIME_TAGS) else data.text()
        tags = [t for t in raw.splitlines() if t.strip()]
        if tags:
            self.tags_dropped.emit(tags)
            event.acceptProposedAction()


class ThroughputChart(_Plot):
    """Rows/s of each running pipeline over time (one point per refresh, the last `keep` kept)."""

    def __init__(self, keep: int = 7_200, parent=None):
        super().__init__(parent)
        self.keep = keep
        self.setLabel("left", "rows/s")
        self.setMinimumHeight(120)
        self._points: dict[str, tuple[list[float], list[float]]] = {}

    def add_sample(self, at_s: float, rates: dict[str, float]) -> None:
        for name, rate in rates.items():
            xs, ys = self._points.setdefault(name, ([], []))
            xs.append(at_s)
            ys.append(rate)
            if len(xs) > self.keep:
                del xs[: len(xs) - self.keep]
                del ys[: len(ys) - self.keep]
            self.set_curve(name, np.asarray(xs), np.asarray(ys), draw=False)
        self.draw()

    def pipelines(self) -> list[str]:
        return list(self._points)
