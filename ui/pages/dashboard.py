"""Dashboard: cards (pipelines, runs, rows and failures today, active streams), recent activity
(runs and alarms), health (engine, disk, each live source's session state) and quick actions."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
)

from ui.pages.base import Page

REFRESH_MS = 5000


class Card(QFrame):
    def __init__(self, title: str):
        super().__init__()
        self.setObjectName("Card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        self.value = QLabel("–")
        self.value.setStyleSheet("font-size: 26px; font-weight: 600;")
        layout.addWidget(self.value)
        layout.addWidget(QLabel(title))


class DashboardPage(Page):
    title = "Dashboard"
    icon_name = "dashboard"

    def __init__(self, window):
        super().__init__(window)
        self.sources: dict[str, tuple[str, str | None]] = {}
        self.alarms: list[str] = []
        titles = {
            "pipelines": "Pipelines",
            "runs_today": "Runs today",
            "rows_today": "Rows processed today",
            "failures_today": "Failures today",
            "active_streams": "Active streams",
        }
        self.cards = {key: Card(text) for key, text in titles.items()}
        cards = QHBoxLayout()
        for card in self.cards.values():
            cards.addWidget(card)
        self.activity = QListWidget()
        self.health = QLabel("…")
        self.health.setWordWrap(True)
        actions = QHBoxLayout()
        for text, slot in (
            ("Run demo", self.run_demo),
            ("Open editor", lambda: self.main_window.show_page("editor")),
            ("New pipeline", self.main_window.new_pipeline),
        ):
            button = QPushButton(text)
            button.clicked.connect(slot)
            actions.addWidget(button)
        actions.addStretch(1)
        grid = QGridLayout()
        grid.addWidget(QLabel("<b>Recent activity</b>"), 0, 0)
        grid.addWidget(QLabel("<b>Health</b>"), 0, 1)
        grid.addWidget(self.activity, 1, 0)
        grid.addWidget(self.health, 1, 1)
        grid.setColumnStretch(0, 2)
        grid.setColumnStretch(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(cards)
        layout.addLayout(grid, 1)
        layout.addLayout(actions)
        self.bridge.event.connect(self._on_event)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REFRESH_MS)
        self.summary: dict[str, Any] = {}
        self.refresh()

    def on_show(self) -> None:
        self.refresh()

    def shutdown(self) -> None:
        self.timer.stop()

    def refresh(self) -> None:
        work = lambda: (self.engine.dashboard_summary(), self.engine.recent_runs(10))  # noqa: E731
        self.bridge.call(self.engine.call(work), self._show, lambda exc: self.health.setText(f"✕ {exc}"))

    def _show(self, result) -> None:
        summary, runs = result
        self.summary = summary
        for key, card in self.cards.items():
            card.value.setText(f"{summary[key]:,}")
        self.activity.clear()
        for alarm in self.alarms[-5:][::-1]:
            self.activity.addItem(f"⚠ {alarm}")
        for r in runs:
            self.activity.addItem(
                f"{r['status']:<9} {r['pipeline']} · {r['started_at'][:19].replace('T', ' ')} · {r['rows_in'] or 0:,} rows in"
            )
        if not runs and not self.alarms:
            self.activity.addItem("No runs yet: run the demo or a pipeline.")
        h = summary["health"]
        lines = [
            f"Engine: {h['engine']} · {h['running_jobs']} jobs",
            f"Disk free: {h['disk_free_bytes'] / 1e9:.1f} GB ({h['disk_free_ratio']:.0%}) in {h['data_dir']}",
        ]
        lines += [
            f"{name}: {state}" + (f" ({detail})" if detail else "")
            for name, (state, detail) in sorted(self.sources.items())
        ]
        if not self.sources:
            lines.append("No live sources.")
        self.health.setText("\n".join(lines))

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "source_state":
            self.sources[str(event.get("source") or event.get("node") or "source")] = (
                event.get("state", "?"),
                event.get("detail"),
            )
        elif kind == "alarm":
            self.alarms.append(str(event.get("message") or event.get("text") or event))
        elif kind in ("run_finished", "job_finished"):
            self.refresh()

    def run_demo(self) -> None:
        run = getattr(self.engine, "run_demo", None)
        if run is None:
            self.main_window.show_page("pipelines")
            self.toast(
                "info", "Open the e-commerce or wind-farm pipeline from the Pipelines page to run the demo"
            )
            return
        self.bridge.call(
            run(),
            lambda _r: self.toast("success", "Demo finished"),
            lambda exc: self.toast("error", str(exc)),
        )
