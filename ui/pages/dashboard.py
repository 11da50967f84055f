"""Dashboard: cards (pipelines, runs, rows and failures today, active streams), recent activity
(runs and alarms), health (engine, data dir disk space, each running stream's source sessions) and
quick actions (run the demo, new pipeline, open a pipeline, live view).

A card, a run in the activity list and a source open the page that shows more of it. Numbers are
read in the background (`engine.call`) every few seconds, at once when a run ends or a source's
session changes; times are shown in the settings' time zone.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QMouseEvent
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ui.errors import one_line
from ui.pages.base import Page
from ui.preferences import Preferences
from ui.widgets.empty_state import EmptyState
from ui.widgets.loading import LoadingOverlay

REFRESH_MS = 5000
SOON_MS = 200  # a burst of session changes (a stream starting) is read once
ACTIVITY_RUNS = 12
ALARMS_KEPT = 50
LOW_DISK = 0.10  # free share under which the disk line turns red (orange under twice that)
GOOD, WAIT, BAD, IDLE = "#2ea043", "#d29600", "#d73a49", "#8a919c"
SESSION_COLOURS = {
    "connected": GOOD,
    "subscribed": GOOD,
    "connecting": WAIT,
    "reconnecting": WAIT,
    "lost": BAD,
    "failed": BAD,  # the source's thread died: it delivers nothing more (engine/connectors/base.py)
    "stopped": IDLE,
}
RUN_COLOURS = {
    "success": GOOD,
    "warning": WAIT,
    "failed": BAD,
    "interrupted": BAD,
    "running": "#2878dc",
    "cancelled": IDLE,
}
RUN_ROLE = Qt.ItemDataRole.UserRole
ACTIVITY_COLUMNS = ("Status", "Pipeline", "Started", "Rows in", "Rows out", "Rejected")


def _dot(colour: str) -> str:
    return f"<span style='color:{colour}'>●</span>"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def alarm_text(event: dict[str, Any]) -> str:
    """One line for an `alarm` event (the streaming runtime's rows_dropped alarms carry no text)."""
    if event.get("message") or event.get("text"):
        return str(event.get("message") or event.get("text"))
    if event.get("kind") == "rows_dropped":
        return (
            f"{event.get('node', '?')}: {event.get('rows', 0):,} rows dropped ({event.get('reason', '?')});"
            f" {event.get('total_dropped', 0):,} in all"
        )
    return str(event.get("kind") or "alarm")


class Card(QFrame):
    """A number with its name; clicking it opens the page with the rows behind the number."""

    clicked = Signal()

    def __init__(self, title: str, tooltip: str):
        super().__init__()
        self.setObjectName("Card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip(tooltip)
        layout = QVBoxLayout(self)
        self.value = QLabel("–")
        self.value.setStyleSheet("font-size: 26px; font-weight: 600;")
        layout.addWidget(self.value)
        self.title = QLabel(title)
        layout.addWidget(self.title)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(event.position().toPoint()):
            self.clicked.emit()
        super().mouseReleaseEvent(event)


def _section(title: str) -> QLabel:
    label = QLabel(f"<b>{title}</b>")
    label.setContentsMargins(0, 6, 0, 2)
    return label


class DashboardPage(Page):
    title = "Dashboard"
    icon_name = "dashboard"

    def __init__(self, window):
        super().__init__(window)
        self.prefs = Preferences.of(window)
        self.alarms: list[tuple[str, str]] = []  # (when, text), oldest first
        self.summary: dict[str, Any] = {}
        self.runs: list[dict[str, Any]] = []
        self._activity_rows: list[tuple[tuple[str, ...], str, str | None, str]] = []
        self.loaded = False
        self.demo_job = None
        self.last_toast = None
        self._loading = 0

        cards = {
            "pipelines": (
                "Pipelines",
                "Open the Pipelines page",
                lambda: self.main_window.show_page("pipelines"),
            ),
            "runs_today": ("Runs today", "Open today's runs", lambda: self._open_runs(None)),
            "rows_today": ("Rows processed today", "Open today's runs", lambda: self._open_runs(None)),
            "failures_today": (
                "Failures today",
                "Open today's failed runs",
                lambda: self._open_runs("failed"),
            ),
            "active_streams": (
                "Active streams",
                "Open the Live view",
                lambda: self.main_window.show_page("live"),
            ),
        }
        self.cards: dict[str, Card] = {}
        card_row = QHBoxLayout()
        for key, (text, tip, slot) in cards.items():
            card = Card(text, tip)
            card.setObjectName(f"Card_{key}")
            card.clicked.connect(slot)
            self.cards[key] = card
            card_row.addWidget(card)

        # recent activity (runs and alarms), or an empty state that offers the demo
        self.activity = QTreeWidget()
        self.activity.setObjectName("Activity")
        self.activity.setHeaderLabels(list(ACTIVITY_COLUMNS))
        self.activity.setRootIsDecorated(False)
        self.activity.setUniformRowHeights(True)
        self.activity.setAlternatingRowColors(True)
        self.activity.header().setStretchLastSection(False)
        self.activity.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.activity.header().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.activity.setToolTip("Double-click a run to open it on the Runs page")
        self.activity.setStyleSheet(
            "QTreeView::item { padding: 5px 2px; }"
        )  # rows as tall as the Runs page's
        self.activity.itemActivated.connect(lambda item, _column: self._activity_opened(item))
        self.no_activity = EmptyState(
            "No runs yet. Run the demo to see a pipeline at work, or build your own.",
            "Run the demo",
            self.run_demo,
        )
        self.activity_stack = QStackedWidget()
        self.activity_stack.addWidget(self.activity)
        self.activity_stack.addWidget(self.no_activity)

        # health: engine and disk, then each running stream's sources
        self.health = QLabel("…")
        self.health.setObjectName("Health")
        self.health.setWordWrap(True)
        self.health.setTextFormat(Qt.TextFormat.RichText)
        self.health.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.sources = QListWidget()
        self.sources.setObjectName("Sources")
        self.sources.setWordWrap(True)  # an endpoint or an error is long: wrapped, not scrolled to
        self.sources.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.sources.setStyleSheet("QListView::item { padding: 4px 2px; }")
        self.no_sources = EmptyState(
            "No live sources. Start a real_time pipeline to see its links here.",
            "Open pipelines",
            lambda: self.main_window.show_page("pipelines"),
        )
        self.sources_stack = QStackedWidget()
        self.sources_stack.addWidget(self.sources)
        self.sources_stack.addWidget(self.no_sources)

        # quick actions
        self.demo_button = QPushButton("Run the demo")
        self.demo_button.setObjectName("PrimaryButton")
        self.demo_button.setToolTip("Copy the e-commerce example into the data directory and run it")
        self.demo_button.clicked.connect(self.run_demo)
        self.actions: dict[str, QPushButton] = {"demo": self.demo_button}
        for key, text, slot in (
            ("new", "New pipeline", self.main_window.new_pipeline),
            ("open", "Open a pipeline", lambda: self.main_window.show_page("pipelines")),
            ("live", "Live view", lambda: self.main_window.show_page("live")),
        ):
            button = QPushButton(text)
            button.clicked.connect(slot)
            self.actions[key] = button
        actions = QGridLayout()
        for i, button in enumerate(self.actions.values()):
            actions.addWidget(button, i // 2, i % 2)

        right = QVBoxLayout()
        right.addWidget(_section("Quick actions"))
        right.addLayout(actions)
        right.addWidget(_section("Health"))
        health_box = QFrame()
        health_box.setObjectName("Card")
        health_box.setFrameShape(QFrame.Shape.StyledPanel)
        box = QVBoxLayout(health_box)
        box.addWidget(self.health)
        box.addWidget(QLabel("Sources"))
        box.addWidget(self.sources_stack, 1)
        right.addWidget(health_box, 1)
        left = QVBoxLayout()
        left.addWidget(_section("Recent activity"))
        left.addWidget(self.activity_stack, 1)
        grid = QHBoxLayout()
        grid.addLayout(left, 3)
        grid.addLayout(right, 2)

        self.body = QWidget()
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(card_row)
        layout.addLayout(grid, 1)
        outer = QVBoxLayout(self)
        outer.addWidget(self.body)
        self.overlay = LoadingOverlay(self.body, "Loading the dashboard…")

        self.bridge.event.connect(self._on_event)
        self.prefs.changed.connect(lambda _values: self.refresh(quiet=True))  # times in the new zone
        self.timer = QTimer(self)
        self.timer.timeout.connect(lambda: self.refresh(quiet=True))
        self.timer.start(REFRESH_MS)
        self._soon = QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.setInterval(SOON_MS)
        self._soon.timeout.connect(lambda: self.refresh(quiet=True))
        self.refresh()

    def on_show(self) -> None:
        self.refresh(quiet=True)  # the numbers shown stay usable while they are read again

    def shutdown(self) -> None:
        self.timer.stop()
        self._soon.stop()

    # ---- reading -----------------------------------------------------------------------------
    def refresh(self, quiet: bool = False) -> None:
        """Read the cards, the latest runs and the health in the background; `quiet` (the timer)
        shows no loading overlay once the page has numbers."""
        engine = self.engine
        now = datetime.now(UTC).astimezone(self.prefs.zone)  # "today" in the shown time zone
        self._loading += 1
        if not (quiet and self.loaded):
            self.overlay.start("Loading the dashboard…")
        self.bridge.call(engine.call(engine.health.summary, now, ACTIVITY_RUNS), self._show, self._failed)

    def _done_loading(self) -> None:
        self._loading = max(0, self._loading - 1)
        if not self._loading:
            self.overlay.stop()

    def _failed(self, exc: BaseException) -> None:
        self._done_loading()
        line = one_line(exc)
        self.health.setText(f"{_dot(BAD)} The engine did not answer: {html.escape(line)}")

    def _show(self, summary) -> None:
        runs = summary["recent_runs"]
        self._done_loading()
        self.loaded = True
        self.summary, self.runs = summary, runs
        for key, card in self.cards.items():
            card.value.setText(f"{summary[key]:,}")
        failures = summary.get("failures_today", 0)
        self.cards["failures_today"].value.setStyleSheet(
            "font-size: 26px; font-weight: 600;" + (f" color: {BAD};" if failures else "")
        )
        self._fill_activity()
        self._fill_health(summary["health"])

    def _fill_activity(self) -> None:
        rows: list[tuple[tuple[str, ...], str, str | None, str]] = []  # cells, colour, run id, tooltip
        for when, text in self.alarms[-5:][::-1]:
            rows.append((("⚠ alarm", text, when, "", "", ""), BAD, None, text))
        for r in self.runs:
            cells = (
                f"● {r['status']}",
                r["pipeline"],
                self.prefs.format_time(r.get("started_at"), "%Y-%m-%d %H:%M:%S"),
                f"{r.get('rows_in') or 0:,}",
                f"{r.get('rows_out') or 0:,}",
                f"{r.get('rows_rejected') or 0:,}",
            )
            tip = r.get("error") or f"Run {r['run_id']}: double-click to open it"
            rows.append((cells, RUN_COLOURS.get(r["status"], IDLE), r["run_id"], tip))
        self.activity_stack.setCurrentWidget(self.activity if rows else self.no_activity)
        self.activity.headerItem().setText(2, f"Started ({self.prefs.zone_name})")
        if rows == self._activity_rows:
            return  # the timer's refresh keeps the user's selection and scroll position
        self._activity_rows = rows
        self.activity.clear()
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for cells, colour, run_id, tip in rows:
            item = QTreeWidgetItem(list(cells))
            item.setForeground(0, QColor(colour))
            for column in (3, 4, 5):
                item.setTextAlignment(column, right)
            for column in range(len(cells)):
                item.setToolTip(column, tip)
            item.setData(0, RUN_ROLE, run_id)
            self.activity.addTopLevelItem(item)

    def _fill_health(self, h: dict[str, Any]) -> None:
        engine_colour = GOOD if h["engine"] == "ready" else WAIT
        jobs = h["running_jobs"]
        free = h["disk_free_ratio"]
        disk_colour = BAD if free < LOW_DISK else WAIT if free < 2 * LOW_DISK else GOOD
        lines = [
            f"{_dot(engine_colour)} Engine: {html.escape(h['engine'])} · {jobs} job{'s' if jobs != 1 else ''} running",
            f"{_dot(disk_colour)} Disk: {_bytes(h['disk_free_bytes'])} free of {_bytes(h['disk_total_bytes'])}"
            f" ({free:.0%})",
            f"<span style='color:{IDLE}'>Data directory: {html.escape(h['data_dir'])}</span>",
        ]
        if free < LOW_DISK:
            lines.append(f"<span style='color:{BAD}'>Low disk space: the historian may stop writing.</span>")
        self.health.setText("<br>".join(lines))
        self.sources.clear()
        for s in h.get("sources", []):
            state = s["state"]
            text = f"●  {s['pipeline']} / {s['node']}: {state}" + (
                f" ({s['detail']})" if s.get("detail") else ""
            )
            item = QListWidgetItem(text)
            item.setForeground(QColor(SESSION_COLOURS.get(state, IDLE)))
            item.setToolTip(f"Since {self.prefs.format_time(s.get('since'))} ({self.prefs.zone_name})")
            self.sources.addItem(item)
        self.sources_stack.setCurrentWidget(self.sources if self.sources.count() else self.no_sources)

    def source_states(self) -> dict[str, str]:
        """ "pipeline / node" -> session state, as the health panel shows them."""
        return {
            f"{s['pipeline']} / {s['node']}": s["state"]
            for s in self.summary.get("health", {}).get("sources", [])
        }

    # ---- events ------------------------------------------------------------------------------
    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "source_state":
            self._soon.start()
        elif kind == "alarm":
            when = self.prefs.format_time(datetime.now(UTC), "%H:%M:%S")
            self.alarms = [*self.alarms, (when, alarm_text(event))][-ALARMS_KEPT:]
            self._soon.start()
        elif kind in ("run_started", "run_finished"):
            self._soon.start()

    # ---- actions -----------------------------------------------------------------------------
    def _open_runs(self, status: str | None) -> None:
        from ui.pages.runs import TODAY

        page = self.main_window.show_page("runs")
        show = getattr(page, "show_filtered", None)
        if show is not None:
            show(status=status, time_range=TODAY)

    def _activity_opened(self, item: QTreeWidgetItem) -> None:
        run_id = item.data(0, RUN_ROLE)
        if run_id:
            self.open_run(run_id)

    def open_run(self, run_id: str) -> None:
        page = self.main_window.show_page("runs")
        show = getattr(page, "show_run", None)
        if show is not None:
            show(run_id)

    def run_demo(self) -> None:
        """Copy the e-commerce example into the data directory (on the pool) and run it."""
        if self.demo_job is not None:
            return
        self.demo_job = "installing"
        for button in (self.demo_button, self.no_activity.button):
            button.setEnabled(False)
            button.setText("Running the demo…")
        self.bridge.call(
            self.engine.call(self.engine.pipelines.install_demo), self._demo_installed, self._demo_failed
        )

    def _demo_installed(self, demo: dict[str, Any]) -> None:
        job = self.engine.runs.start(demo["document"], spec_path=demo["spec_path"], trigger="demo")
        self.demo_job = job
        self.bridge.call(job, self._demo_done, self._demo_failed)

    def _demo_settled(self) -> None:
        self.demo_job = None
        for button in (self.demo_button, self.no_activity.button):
            button.setEnabled(True)
            button.setText("Run the demo")

    def _demo_done(self, record: dict[str, Any]) -> None:
        self._demo_settled()
        status = record.get("status", "failed")
        kind = {"success": "success", "warning": "warning", "failed": "error"}.get(status, "info")
        text = (
            f"Demo {status}: {record.get('rows_in', 0)} rows in, {record.get('rows_out', 0)} out,"
            f" {record.get('rows_rejected', 0)} rejected<br><a href='run'>Open run</a>"
        )
        self.last_toast = self.main_window.toast(kind, text)
        run_id = record.get("run_id")
        label = getattr(self.last_toast, "label", None)
        if label is not None and run_id:
            label.linkActivated.connect(lambda _href: self.open_run(run_id))
        self.refresh(quiet=True)

    def _demo_failed(self, exc: BaseException) -> None:
        self._demo_settled()
        line = one_line(exc)
        self.toast("error", f"The demo did not run: {line}")
