"""The pipeline editor page: palette | canvas | properties, with problems and preview below.

The document (ui/editor/document.py) is the one copy of the pipeline; the canvas, the properties
panel and the problems list are views of it. Reading, saving, validating, previewing and running
go through the engine's threads (`engine.call` / jobs) and come back through the bridge.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMenu,
    QSplitter,
    QTabWidget,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ui.editor.canvas import PipelineCanvas
from ui.editor.document import PipelineDocument, new_document
from ui.editor.layout import auto_layout
from ui.editor.palette import Palette
from ui.editor.preview_panel import PreviewPanel
from ui.editor.problems import ProblemsList
from ui.editor.properties import PropertiesPanel
from ui.editor.run_controller import RunController
from ui.errors import one_line
from ui.pages.base import Page
from ui.widgets.loading import LoadingOverlay

VALIDATE_DELAY_MS = 300
PREVIEW_DELAY_MS = 500
CLIP_MIME_KEY = "aggregator-nodes"
_SLUG = re.compile(r"[^A-Za-z0-9_\-]+")


class EditorPage(Page):
    title = "Editor"
    icon_name = "editor"

    run_requested = Signal(dict)  # the document, when F5 asks for a run
    validated = Signal(list)  # the issues of the latest validation
    saved = Signal(str)  # the path written
    opened = Signal(str)  # the path read

    def __init__(self, window):
        super().__init__(window)
        self.path: Path | None = None
        self.node_types = self.engine.pipelines.node_types()
        self.document = PipelineDocument(new_document(), self)
        self.issues: list[dict[str, Any]] = []
        self._clipboard: dict[str, Any] | None = None
        self._validation_generation = 0
        self._secret_names: list[str] = []
        self._pipelines_dir: Path | None = None  # the user's pipelines folder: where dialogs start
        self._origin_dir: Path | None = None  # an imported file's folder: its relative paths start there

        self.palette = Palette(self.node_types)
        self.canvas = PipelineCanvas(self.document, self.node_types, self)
        self.canvas.on_drop = self.add_node_at
        self.properties = PropertiesPanel(self.document, self.node_types, lambda: self._secret_names)
        self.problems = ProblemsList()
        self.preview = PreviewPanel(self.engine, self.bridge)
        self.runner = RunController(self.engine, self.bridge, window, self)
        self.status = QLabel()

        self._build_layout()
        self._build_actions()
        self.loading = LoadingOverlay(self.canvas.widget)

        self.palette.activated.connect(lambda key: self.add_node_at(key, None))
        self.canvas.selection_changed.connect(self._on_selection)
        self.problems.node_clicked.connect(self.select_node)
        self.document.changed.connect(self._on_document_changed)
        self.document.undo_stack.cleanChanged.connect(lambda _clean: self._update_title())
        self._validate_timer = QTimer(self, singleShot=True, interval=VALIDATE_DELAY_MS)
        self._validate_timer.timeout.connect(self.validate_now)
        self._preview_timer = QTimer(self, singleShot=True, interval=PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self.preview_selected)
        self.preview.edge_counts.connect(self.canvas.set_edge_counts)
        self.runner.edge_counts.connect(self.canvas.set_edge_counts)
        self.runner.node_progress.connect(self.canvas.set_progress)
        self.runner.running_changed.connect(self._running_changed)
        self._update_title()
        self.validate_now()

    # ---- layout -----------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        self.toolbar = QToolBar()
        bottom = QTabWidget()
        bottom.addTab(self.problems, "Problems")
        bottom.addTab(self.preview, "Preview")
        self.bottom_tabs = bottom

        middle = QSplitter(Qt.Orientation.Horizontal)
        middle.addWidget(self.palette)
        middle.addWidget(self.canvas.widget)
        middle.addWidget(self.properties)
        middle.setStretchFactor(1, 1)
        # The properties get room for a connector's form, labels and fields side by side (most need
        # 250-370 px; MQTT's needs 500 and scrolls sideways rather than hiding its labels).
        middle.setSizes([190, 770, 380])
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(middle)
        vertical.addWidget(bottom)
        vertical.setStretchFactor(0, 1)
        vertical.setSizes([520, 220])

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toolbar)
        layout.addWidget(vertical, 1)
        layout.addWidget(self.status)

    def _action(self, text: str, slot, shortcut: str | None = None, scope: QWidget | None = None) -> QAction:
        action = QAction(text, self)
        action.triggered.connect(slot)
        self.toolbar.addAction(action)
        if shortcut:
            # Shortcuts live on the page (or the canvas, for edits of the selection), so the same
            # keys on other pages or in text fields keep their own meaning.
            sc = QShortcut(QKeySequence(shortcut), scope or self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)
            action.setToolTip(f"{text} ({shortcut})")
        return action

    def _build_actions(self) -> None:
        canvas = self.canvas.widget
        self._action("New", self.new_pipeline)
        self._action("Open…", self.open_dialog, "Ctrl+O")
        self.templates_button = QToolButton(text="Templates")
        self.templates_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.templates_menu = QMenu(self.templates_button)
        self.templates_button.setMenu(self.templates_menu)
        self.toolbar.addWidget(self.templates_button)
        self.save_action = self._action("Save", self.save, "Ctrl+S")
        self.save_as_action = self._action("Save as…", self.save_as_dialog, "Ctrl+Shift+S")
        self.toolbar.addSeparator()
        self.undo_action = self._action("Undo", self.document.undo_stack.undo, "Ctrl+Z")
        self.redo_action = self._action("Redo", self.document.undo_stack.redo, "Ctrl+Shift+Z")
        QShortcut(QKeySequence("Ctrl+Y"), self, self.document.undo_stack.redo).setContext(
            Qt.ShortcutContext.WidgetWithChildrenShortcut
        )
        self._action("Copy", self.copy_selection, "Ctrl+C", canvas)
        self._action("Paste", self.paste, "Ctrl+V", canvas)
        self._action("Delete", self.delete_selection, "Del", canvas)
        self.toolbar.addSeparator()
        self._action("Auto-layout", self.auto_layout, "Ctrl+L")
        self._action("Fit", lambda: self.canvas.fit_to_view(), "Ctrl+0")
        self.toolbar.addSeparator()
        self._action("Preview", self.preview_selected, "Ctrl+P")
        # One button: Run, and Stop while a run or a stream goes (F5 runs, Shift+F5 stops).
        self.run_action = self._action("Run", self.run_or_stop)
        self.run_action.setToolTip("Run (F5)")
        for keys, slot in (("F5", self.run), ("Shift+F5", self.stop)):
            shortcut = QShortcut(QKeySequence(keys), self, slot)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)

    # ---- page contract ------------------------------------------------------------------------------
    def on_show(self) -> None:
        self.bridge.call(self.engine.call(self.engine.pipelines.templates), self._set_templates)
        self.bridge.call(
            self.engine.call(self.engine.pipelines.folder), lambda p: setattr(self, "_pipelines_dir", Path(p))
        )
        self.bridge.call(
            self.engine.call(self.engine.connectors.secret_names),
            lambda v: setattr(self, "_secret_names", list(v)),
        )

    def has_unsaved_changes(self) -> bool:
        try:
            return not self.document.undo_stack.isClean()
        except RuntimeError:  # the stack is being destroyed with the page (its last cleanChanged)
            return False

    def shutdown(self) -> None:
        self._validate_timer.stop()
        self._preview_timer.stop()
        self.preview.cancel()
        self.runner.cancel()

    def _set_templates(self, templates: list[dict[str, Any]]) -> None:
        self.templates_menu.clear()
        for t in templates:
            self.templates_menu.addAction(t["title"], lambda p=t["path"]: self.open_template(p))

    def _update_title(self) -> None:
        name = self.document.get("name") or "Untitled"
        where = str(self.path) if self.path else "not saved yet"
        star = " •" if self.has_unsaved_changes() else ""
        runner = getattr(self, "runner", None)
        state = ""
        if runner is not None and runner.running:
            state = " — streaming (Shift+F5 stops)" if runner.streaming else " — running (Shift+F5 cancels)"
        self.status.setText(f"{name}{star} — {where} — {len(self.document.nodes)} nodes{state}")

    # ---- files --------------------------------------------------------------------------------------
    def _may_discard(self) -> bool:
        """Ask before unsaved edits are thrown away (New, Open, a template)."""
        if not self.has_unsaved_changes():
            return True
        name = self.document.get("name") or "The pipeline"
        return self.main_window.confirm(
            "Discard changes?",
            f"“{name}” has unsaved changes. Discard them?",
            destructive=True,
            accept_text="Discard changes",
        )

    def new_pipeline(self) -> None:
        if self._may_discard():
            self.path = self._origin_dir = None
            self.document.load(new_document())
            self._update_title()

    def _dialog_start(self, file_name: str = "") -> str:
        """Where the file dialogs open: beside the open file, else in the user's pipelines folder
        (the one the Pipelines page lists), so a saved pipeline shows up there."""
        folder = self.path.parent if self.path else self._pipelines_dir
        if folder is None:
            return file_name
        return str(folder / file_name) if file_name else str(folder)

    def open_dialog(self) -> None:
        if not self._may_discard():
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Open pipeline", self._dialog_start(), "Pipelines (*.json *.yaml *.yml)"
        )
        if path:
            self.open_pipeline(path, confirm=False)

    def open_pipeline(self, path: str | Path, *, as_template: bool = False, confirm: bool = True) -> None:
        """Read a spec (graph or linear form) in the background and show it."""
        if confirm and not self._may_discard():
            return
        path = Path(path)
        self.loading.start(f"Opening {path.name}…")
        future = self.engine.call(self.engine.pipelines.read, path)
        self.bridge.call(
            future,
            lambda read: self._opened(read, None if as_template else path, path),
            lambda exc: self._open_failed(path, exc),
        )

    def open_template(self, path: str | Path) -> None:
        """A template opens as a new, unsaved pipeline (saving asks where)."""
        self.open_pipeline(path, as_template=True)

    def load_document(self, doc: dict[str, Any], path: Path | None = None) -> None:
        """Show `doc` (graph form); nodes without a position are laid out automatically."""
        doc = dict(doc)
        layout = dict(doc.get("layout") or {})
        if any(n["id"] not in layout for n in doc.get("nodes", [])):
            placed = auto_layout(doc["nodes"])
            layout = {**{k: list(v) for k, v in placed.items()}, **layout} if layout else placed
        doc["layout"] = layout
        self.path, self._origin_dir = path, None
        self.document.load(doc)
        self.canvas.fit_to_view(readable=True)
        self._update_title()
        # The previous document's problems go at once; this one is checked now, not after a pause.
        self._validate_timer.stop()
        self.issues = []
        self.canvas.set_errors({})
        self.problems.set_checking()
        self.validate_now()

    def _opened(self, read: dict[str, Any], path: Path | None, source: Path) -> None:
        self.loading.stop()
        # A linear document is shown as a graph; saving writes a new file, not over the linear one.
        # The app's own examples and templates are read-only: saving them asks where (a copy).
        keep = read["form"] != "linear" and not read.get("shipped")
        self.load_document(read["document"], path if keep else None)
        self._origin_dir = None if read.get("shipped") else source.parent
        self.opened.emit(str(source))

    def _open_failed(self, path: Path, exc: BaseException) -> None:
        self.loading.stop()
        self.toast("error", f"Cannot open {path.name}: {_one_line(exc, path)}")

    def save(self) -> None:
        if self.path is None:
            self.save_as_dialog()
        else:
            self.save_to(self.path)

    def save_as_dialog(self) -> None:
        stem = _SLUG.sub("_", str(self.document.get("name") or "pipeline")).strip("_").lower() or "pipeline"
        path, _ = QFileDialog.getSaveFileName(
            self, "Save pipeline", self._dialog_start(f"{stem}.json"), "Pipelines (*.json)"
        )
        if path:
            path = Path(path)
            self.save_to(path if path.suffix else path.with_suffix(".json"))

    def save_to(self, path: str | Path) -> None:
        """Write the graph form (with `layout`) in the background; the history is marked clean
        if nothing changed meanwhile."""
        path = Path(path)
        doc = self.document.to_dict()
        at = self.document.undo_stack.index()

        def done(version: int) -> None:
            self.path = path
            if self.document.undo_stack.index() == at:
                self.document.undo_stack.setClean()
            self._update_title()
            self.toast("success", f"Saved {path.name} (version {version})")
            self.saved.emit(str(path))

        self.bridge.call(
            self.engine.call(self.engine.pipelines.save, path, doc),
            done,
            lambda exc: self.toast("error", f"Cannot save {path.name}: {_one_line(exc, path)}"),
        )

    # ---- editing ----------------------------------------------------------------------------------
    def add_node_at(self, key: str, pos: tuple[float, float] | None) -> str:
        """Add a palette entry at a scene position (None: the centre of the view)."""
        info = next(t for t in self.node_types if t["key"] == key)
        if pos is None:
            x, y = self.canvas.scene_center()
            pos = (x + 30 * (len(self.document.nodes) % 5), y + 30 * (len(self.document.nodes) % 5))
        node_id = self.document.add_node(info["kind"], info["type"], pos)
        self.select_node(node_id)
        return node_id

    def select_node(self, node_id: str) -> None:
        self.canvas.select([node_id])
        self.canvas.center_on(node_id)

    def delete_selection(self) -> None:
        self.document.remove_nodes(self.canvas.selected_ids())

    def copy_selection(self) -> None:
        ids = self.canvas.selected_ids()
        if not ids:
            return
        self._clipboard = self.document.copy_nodes(ids)
        QApplication.clipboard().setText(json.dumps({CLIP_MIME_KEY: self._clipboard}))

    def paste(self) -> None:
        clip = self._clipboard
        with contextlib.suppress(ValueError, AttributeError):  # the clipboard holds other text
            clip = json.loads(QApplication.clipboard().text()).get(CLIP_MIME_KEY) or clip
        if clip:
            ids = self.document.paste(clip)
            self.canvas.select(ids)

    def auto_layout(self) -> None:
        self.document.move_nodes(auto_layout(self.document.nodes))
        self.canvas.fit_to_view()

    def _on_selection(self, ids: list[str]) -> None:
        self.properties.show_node(ids[0] if len(ids) == 1 else None)
        if len(ids) == 1:
            self._preview_timer.start()

    def _on_document_changed(self, _touched) -> None:
        self._update_title()
        self._validate_timer.start()

    # ---- validation (debounced, off the Qt thread) ------------------------------------------------
    def validate_now(self) -> None:
        self._validation_generation += 1
        generation = self._validation_generation
        doc = self.document.to_dict()
        self.bridge.call(
            self.engine.call(self.engine.pipelines.validate, doc),
            lambda issues: self._validated(generation, issues),
        )

    def _validated(self, generation: int, issues: list[dict[str, Any]]) -> None:
        if generation != self._validation_generation:
            return  # a newer edit is being validated
        self.issues = issues
        errors: dict[str, list[str]] = {}
        for issue in issues:
            if issue.get("node_id"):
                errors.setdefault(issue["node_id"], []).append(issue["message"])
        self.canvas.set_errors({k: "\n".join(v) for k, v in errors.items()})
        self.problems.set_issues(issues)
        self.properties.show_issues(issues)
        self.validated.emit(issues)

    # ---- preview and run ---------------------------------------------------------------------------
    def _base_dir(self) -> Path | None:
        """Where relative paths resolve: the spec's folder; for a pipeline not saved yet, the folder
        it was imported from, else the user's pipelines folder (where saving will put it)."""
        return self.path.parent if self.path else self._origin_dir or self._pipelines_dir

    def preview_selected(self) -> None:
        """A dry run through the selected node, shown under the canvas (nothing is written)."""
        ids = self.canvas.selected_ids()
        if len(ids) != 1:
            return
        self.preview.show_node(self.document.to_dict(), ids[0], base_dir=self._base_dir())

    def run(self) -> None:
        """F5: run the pipeline (a real_time one streams until Stop, Shift+F5)."""
        doc = self.document.to_dict()
        self.run_requested.emit(doc)
        if self.issues:
            self.bottom_tabs.setCurrentWidget(self.problems)
            self.toast("error", f"Fix the {len(self.issues)} problem(s) before running (see Problems)")
            return
        self.canvas.set_progress(None, None)
        self.runner.start(doc, spec_path=self.path, base_dir=self._base_dir())

    def stop(self) -> None:
        """Shift+F5: cancel the run; a stream stops after committing its last micro-batch."""
        self.runner.cancel()

    def run_or_stop(self) -> None:
        """The toolbar's Run button, which reads Stop while a run goes."""
        if self.runner.running:
            self.stop()
        else:
            self.run()

    def _running_changed(self, running: bool) -> None:
        streaming = running and self.runner.streaming
        self.run_action.setText("Stop" if running else "Run")
        self.run_action.setToolTip(
            ("Stop the stream" if streaming else "Cancel the run") + " (Shift+F5)" if running else "Run (F5)"
        )
        self._update_title()


def _one_line(exc: BaseException, path: Path) -> str:
    """An error as one line for a toast, without the file's path (the toast names the file)."""
    text = one_line(exc)
    for prefix in (f"{path}: ", f"{path.name}: "):
        text = text.removeprefix(prefix)
    return text
