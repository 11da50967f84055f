"""The preview under the canvas: a node's first rows (a dry run through it; nothing is written)
with the column types, and its rejected rows with their reasons.

`show_node(doc, node_id)` runs the preview in the background (the engine's `preview` job); a newer
request or Cancel stops the running one. `edge_counts` tells the canvas how many rows passed each
(node, port) in the preview, for the link labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ui.errors import one_line
from ui.widgets.frame_table import FrameTable
from ui.widgets.loading import LoadingOverlay

REASON = "_reject_reason"  # engine.transforms.base.REJECT_REASON


class PreviewPanel(QWidget):
    """`PreviewPanel(engine, bridge)`; `show_node(doc, node_id, base_dir=None)`, `cancel()`."""

    edge_counts = Signal(
        object
    )  # a dict (tuple keys: Signal(dict) cannot carry them); {(node, port): rows} of the last preview
    finished = Signal(object)  # the engine's PreviewResult
    failed = Signal(str)  # one line: what went wrong (or "cancelled")

    def __init__(self, engine, bridge, parent: QWidget | None = None, limit: int = 100):
        super().__init__(parent)
        self.setObjectName("PreviewPanel")
        self.engine, self.bridge, self.limit = engine, bridge, limit
        self.job = None
        self.node_id: str | None = None
        self.result = None

        self.title = QLabel("Select a node to preview its rows")
        self.title.setObjectName("PreviewTitle")
        self.port_box = QComboBox()
        self.port_box.setToolTip("Output port")
        self.port_box.hide()
        self.port_box.currentTextChanged.connect(self._show_port)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("PreviewCancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        head = QHBoxLayout()
        head.setContentsMargins(6, 4, 6, 0)
        head.addWidget(self.title, 1)
        head.addWidget(self.port_box)
        head.addWidget(self.cancel_button)

        self.tabs = QTabWidget()
        self.rows_table = FrameTable()
        self.rejected_table = FrameTable()
        self.tabs.addTab(self.rows_table, "Rows")
        self.tabs.addTab(self.rejected_table, "Rejected")
        self.overlay = LoadingOverlay(self.tabs)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.tabs, 1)

    # ---- actions -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None

    def show_node(self, doc: dict[str, Any], node_id: str, base_dir: str | Path | None = None) -> None:
        """Preview `node_id` of the document in the background (cancels a preview still running)."""
        if self.job is not None:
            self.job.cancel()
        self.node_id = node_id
        job = self.engine.runs.preview(doc, node_id, limit=self.limit, base_dir=base_dir)
        self.job = job
        self.title.setText(f"Previewing {node_id}…")
        self.cancel_button.show()
        self.overlay.start(f"Previewing {node_id}…")
        self.bridge.call(job, lambda r: self._done(job, r), lambda e: self._failed(job, e))

    def cancel(self) -> None:
        if self.job is None:
            return
        self.job.cancel()
        self._settle()
        self.title.setText(f"{self.node_id}: preview cancelled")
        self.failed.emit("cancelled")

    def clear(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._settle()
        self.node_id, self.result = None, None
        self.title.setText("Select a node to preview its rows")
        self.port_box.hide()
        self.rows_table.set_frame(pl.DataFrame())
        self.rejected_table.set_frame(pl.DataFrame())
        self.tabs.setTabText(1, "Rejected")

    # ---- results -----------------------------------------------------------------------------
    def _settle(self) -> None:
        self.job = None
        self.overlay.stop()
        self.cancel_button.hide()

    def _done(self, job, result) -> None:
        if job is not self.job:
            return  # an older preview, replaced or cancelled meanwhile
        self._settle()
        self.result = result
        node = self.node_id
        ports = [port for (nid, port) in result.ports if nid == node and port != "rejected"]
        self.port_box.blockSignals(True)
        self.port_box.clear()
        self.port_box.addItems(ports)
        self.port_box.blockSignals(False)
        self.port_box.setVisible(len(ports) > 1)
        self._show_port(ports[0] if ports else "out")
        rejected = result.rejected(node)
        frame = _reasons_first(rejected.rows) if rejected is not None else pl.DataFrame()
        self.rejected_table.set_frame(frame)
        count = rejected.rows_total if rejected is not None else 0
        self.tabs.setTabText(1, f"Rejected ({count})")
        self.edge_counts.emit(result.edge_counts())
        self.finished.emit(result)

    def _show_port(self, port: str) -> None:
        if self.result is None or not port:
            return
        preview = self.result.output(self.node_id, port)
        frame = preview.rows if preview is not None else pl.DataFrame()
        total = preview.rows_total if preview is not None else 0
        self.rows_table.set_frame(frame)
        live = " · live sample" if self.result.live_sampled else ""
        problems = self.result.live_problems  # a live sample without a value says why, not "0 rows"
        if problems:
            reasons = [why if len(problems) == 1 else f"{nid}: {why}" for nid, why in problems.items()]
            live = " · no data: " + "; ".join(reasons)
        shown = f"first {frame.height} of {total}" if total > frame.height else f"{total}"
        self.title.setText(f"{self.node_id} · {shown} rows · {frame.width} columns{live}")

    def _failed(self, job, error: BaseException) -> None:
        if job is not self.job:
            return
        self._settle()
        cancelled = type(error).__name__ == "RunCancelled"
        text = "preview cancelled" if cancelled else one_line(error)
        self.title.setText(f"{self.node_id}: {text}")
        self.failed.emit("cancelled" if cancelled else text)


def _reasons_first(frame: pl.DataFrame) -> pl.DataFrame:
    if REASON not in frame.columns:
        return frame
    return frame.select(pl.col(REASON).alias("reason"), pl.exclude(REASON))
