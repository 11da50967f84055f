"""Connectors page: saved connector configurations, edited through schema forms, with "Test
connection" in the background and an OPC UA tag browser that picks nodes into the config.

Editing works as in other engineering tools: Save checks the form first and marks the fields that are
wrong; saving under a new name renames (the old entry goes); saving over another connector's name
asks first; leaving a form with unsaved edits (another connector, New connector) asks first.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ui.errors import one_line
from ui.pages.base import Page
from ui.widgets.empty_state import EmptyState
from ui.widgets.loading import LoadingOverlay
from ui.widgets.schema_form import SchemaForm

BADGE_STYLE = {
    "ok": "background:#2e7d32;color:white;border-radius:4px;padding:3px 8px;",
    "error": "background:#c62828;color:white;border-radius:4px;padding:3px 8px;",
    "busy": "background:#757575;color:white;border-radius:4px;padding:3px 8px;",
}


class TagBrowser(QDialog):
    """The OPC UA server's address space, expanded on demand; checked variables are picked."""

    def __init__(self, page: ConnectorsPage, config: dict[str, Any]):
        super().__init__(page)
        self.page, self.config = page, config
        self.setWindowTitle(f"Browse {config.get('endpoint', '')}")
        self.resize(680, 520)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Name", "Node id", "Type"])
        self.tree.setColumnWidth(0, 220)
        # the node id is what goes into the config: shown whole, never elided
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemExpanded.connect(self._expand)
        self.status = QLabel("Loading…")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Add checked nodes")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.loaded: set[int] = set()
        self._load(None, self.tree.invisibleRootItem())

    def _load(self, node_id: str | None, parent: QTreeWidgetItem) -> None:
        self.status.setText("Loading…")
        future = self.page.engine.connectors.browse_opcua(self.config, node_id)
        self.page.bridge.call(future, lambda nodes: self._fill(parent, nodes), self._failed)

    def _fill(self, parent: QTreeWidgetItem, nodes: list[dict[str, Any]]) -> None:
        parent.takeChildren()
        for node in nodes:
            item = QTreeWidgetItem(
                [node["display_name"] or node["browse_name"], node["node_id"], node.get("data_type") or ""]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, node["node_id"])
            if node["node_class"] == "Variable":
                item.setCheckState(0, Qt.CheckState.Unchecked)
            if node.get("has_children"):
                item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
            parent.addChild(item)
        self.status.setText(f"{len(nodes)} nodes")

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(f"Browse failed: {one_line(exc)}")

    def _expand(self, item: QTreeWidgetItem) -> None:
        if id(item) not in self.loaded:
            self.loaded.add(id(item))
            self._load(item.data(0, Qt.ItemDataRole.UserRole), item)

    def checked(self) -> list[str]:
        out: list[str] = []

        def walk(item: QTreeWidgetItem) -> None:
            for i in range(item.childCount()):
                child = item.child(i)
                if child.checkState(0) == Qt.CheckState.Checked:
                    out.append(child.data(0, Qt.ItemDataRole.UserRole))
                walk(child)

        walk(self.tree.invisibleRootItem())
        return out


class ConnectorsPage(Page):
    title = "Connectors"
    icon_name = "connectors"

    def __init__(self, window):
        super().__init__(window)
        self.types: dict[str, dict[str, Any]] = {
            d["connector_type"]: d for d in self.engine.connectors.types()
        }
        self.secret_cache: list[str] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.current: str | None = None  # name of the saved connector being edited
        self.form: SchemaForm | None = None
        self.dirty = False
        self.browser: TagBrowser | None = None
        self.test_seq = 0  # a test's result is shown only if no newer test or form replaced it

        # left: the list, or its empty state
        self.list = QListWidget()
        self.list.currentItemChanged.connect(self._picked)
        self.empty = EmptyState(
            "No saved connectors yet. Save a source or destination once and use it in any pipeline.",
            "New connector",
            self.new_connector,
        )
        self.left_stack = QStackedWidget()
        self.left_stack.addWidget(self.empty)
        self.left_stack.addWidget(self.list)
        new = QPushButton("New connector")
        new.setObjectName("new_connector")
        new.clicked.connect(self.new_connector)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(QLabel("<b>Saved connectors</b>"))
        left_layout.addWidget(self.left_stack, 1)
        left_layout.addWidget(new)

        # right: the editor
        self.name = QLineEdit()
        self.name.setPlaceholderText("a name, e.g. plant_opcua")
        self.name.textEdited.connect(self._mark_dirty)
        self.type_combo = QComboBox()
        for name, d in sorted(self.types.items()):
            self.type_combo.addItem(d["title"], name)
        self.role_combo = QComboBox()
        self.type_combo.currentIndexChanged.connect(self._type_changed)
        self.role_combo.currentIndexChanged.connect(self._role_changed)
        header = QFormLayout()
        header.addRow("Name", self.name)
        header.addRow("Type", self.type_combo)
        header.addRow("Role", self.role_combo)
        self.form_area = QScrollArea()
        self.form_area.setWidgetResizable(True)
        self.badge = QLabel()
        self.badge.setObjectName("test_badge")
        self.badge.setWordWrap(True)
        self.badge.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.badge.hide()
        self.problems = QLabel()
        self.problems.setObjectName("form_problems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color:#c62828;")
        self.problems.hide()
        self.unsaved = QLabel("Unsaved changes")
        self.unsaved.setObjectName("unsaved_marker")
        self.unsaved.setStyleSheet("color:#b26a00;")
        self.unsaved.hide()
        self.save_button = QPushButton("Save")
        self.save_button.setObjectName("PrimaryButton")
        self.test_button = QPushButton("Test connection")
        self.browse_button = QPushButton("Browse tags…")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setObjectName("DangerButton")
        self.save_button.clicked.connect(self.save)
        self.test_button.clicked.connect(self.test_connection)
        self.browse_button.clicked.connect(self.browse_tags)
        self.delete_button.clicked.connect(self.delete)
        buttons = QHBoxLayout()
        for b in (self.save_button, self.test_button, self.browse_button):
            buttons.addWidget(b)
        buttons.addWidget(self.unsaved)
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        self.editor = QWidget()
        right_layout = QVBoxLayout(self.editor)
        right_layout.addLayout(header)
        right_layout.addWidget(self.form_area, 1)
        right_layout.addWidget(self.problems)
        right_layout.addWidget(self.badge)
        right_layout.addLayout(buttons)
        self.loading = LoadingOverlay(self.editor)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.editor)
        splitter.setSizes([260, 640])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        self.list_loading = LoadingOverlay(left)
        self._type_changed()
        self.refresh()

    # ---- list ------------------------------------------------------------------------------
    def on_show(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.list_loading.start("Loading connectors…")
        self.bridge.call(self.engine.call(self.engine.connectors.list), self._show_list, self._error)
        self.bridge.call(self.engine.call(self.engine.connectors.secret_names), self._got_secrets)

    def _got_secrets(self, names: list[str]) -> None:
        self.secret_cache = names

    def _show_list(self, rows: list[dict[str, Any]]) -> None:
        self.list_loading.stop()
        self.rows = {r["name"]: r for r in rows}
        self.list.blockSignals(True)
        self.list.clear()
        for r in rows:
            title = self.types.get(r["connector_type"], {}).get("title", r["connector_type"])
            item = QListWidgetItem(f"{r['name']}\n{title} · {r['role']}")
            item.setData(Qt.ItemDataRole.UserRole, r["name"])
            self.list.addItem(item)
            if r["name"] == self.current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.left_stack.setCurrentWidget(self.list if rows else self.empty)

    def _error(self, exc: BaseException) -> None:
        self.list_loading.stop()
        self.loading.stop()
        self.toast("error", one_line(exc))

    # ---- editing ---------------------------------------------------------------------------
    def _picked(self, item: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        """A click in the list: open that connector, unless the user keeps unsaved edits."""
        if item is None:
            return
        name = item.data(Qt.ItemDataRole.UserRole)
        if name == self.current and not self.dirty:
            return
        if not self._may_discard():
            self.list.blockSignals(True)  # stay where we were, selection included
            self.list.setCurrentItem(previous)
            if previous is None:
                self.list.clearSelection()
            self.list.blockSignals(False)
            return
        self.edit(name)

    def _may_discard(self) -> bool:
        """True when there are no unsaved edits, or the user agreed to drop them."""
        if not self.dirty:
            return True
        what = f"'{self.current}'" if self.current else "the new connector"
        return self.main_window.confirm(
            "Unsaved changes",
            f"Your changes to {what} are not saved. Discard them?",
            destructive=True,
            accept_text="Discard changes",
        )

    def new_connector(self) -> None:
        if not self._may_discard():
            return
        self._start_new()

    def _start_new(self) -> None:
        self.current = None
        self.name.clear()
        self.list.blockSignals(True)
        self.list.setCurrentItem(None)
        self.list.clearSelection()
        self.list.blockSignals(False)
        self._build_form({})
        self.name.setFocus()

    def edit(self, name: str) -> None:
        row = self.rows.get(name)
        if row is None:
            return
        self.current = name
        self.name.setText(name)
        for combo, value in ((self.type_combo, row["connector_type"]), (self.role_combo, None)):
            if value is not None:
                combo.blockSignals(True)
                combo.setCurrentIndex(combo.findData(value))
                combo.blockSignals(False)
        self._fill_roles()
        self.role_combo.blockSignals(True)
        self.role_combo.setCurrentIndex(max(0, self.role_combo.findData(row["role"])))
        self.role_combo.blockSignals(False)
        self._build_form(row["config"])

    def _fill_roles(self) -> None:
        roles = self.types.get(self.connector_type(), {}).get("roles", [])
        self.role_combo.blockSignals(True)
        self.role_combo.clear()
        for role in roles:
            self.role_combo.addItem(role, role)
        self.role_combo.blockSignals(False)

    def _type_changed(self, *_args) -> None:
        self._fill_roles()
        self._build_form({})
        self._mark_dirty_if_editing()

    def _role_changed(self, *_args) -> None:
        self._build_form({})
        self._mark_dirty_if_editing()

    def _mark_dirty_if_editing(self) -> None:
        # A new type or role is a new (empty) form: an edit of a saved connector, or of a named draft.
        if self.current is not None or self.name.text().strip():
            self._mark_dirty()

    def connector_type(self) -> str:
        return self.type_combo.currentData()

    def role(self) -> str:
        return self.role_combo.currentData() or "source"

    def _build_form(self, config: dict[str, Any]) -> None:
        d = self.types.get(self.connector_type(), {})
        schema = d.get("source_schema" if self.role() == "source" else "destination_schema") or {}
        self.form = SchemaForm(schema, config, secret_names=lambda: self.secret_cache)
        self.form.changed.connect(self._form_changed)
        self.form_area.setWidget(self.form)
        self.test_seq += 1  # a test still running was for the previous form
        self.test_button.setEnabled(True)
        self.badge.hide()
        self.problems.hide()
        self._set_dirty(False)
        self.browse_button.setVisible(self.connector_type() == "opc_ua" and self.role() == "source")
        self.delete_button.setVisible(self.current is not None)  # nothing saved yet: nothing to delete

    def _form_changed(self) -> None:
        self._mark_dirty()
        if self.badge.property("kind") in ("ok", "error"):
            self.badge.hide()  # the last result was for other settings: it would mislead

    def _mark_dirty(self, *_args) -> None:
        self._set_dirty(True)

    def _set_dirty(self, dirty: bool) -> None:
        self.dirty = dirty
        self.unsaved.setVisible(dirty)

    def has_unsaved_changes(self) -> bool:
        return self.dirty

    # ---- actions ---------------------------------------------------------------------------
    def save(self) -> None:
        """Check the form (marking wrong fields), ask before replacing another connector, then
        store it; under a new name the old entry goes (a rename)."""
        name = self.name.text().strip()
        if not name:
            self._show_problems([{"path": "", "message": "Give the connector a name"}])
            self.name.setFocus()
            return
        config = self.form.value()
        issues = self.engine.connectors.check(self.connector_type(), self.role(), config)
        if issues:
            self._show_problems(issues)
            return
        self.problems.hide()
        self.form.clear_errors()
        if (
            name != self.current
            and name in self.rows
            and not self.main_window.confirm(
                "Replace connector",
                f"A connector named '{name}' already exists. Replace it with this one?",
                destructive=True,
                accept_text="Replace",
            )
        ):
            return
        args = (name, self.connector_type(), self.role(), config, self.current)
        self.loading.start("Saving…")
        self.bridge.call(
            self.engine.call(self.engine.connectors.save, *args),
            lambda row: self._saved(row, args[4]),
            self._save_failed,
        )

    def _show_problems(self, issues: list[dict[str, str]], heading: str = "Not saved") -> None:
        """Mark each field at its path and list every problem under the form, one per line."""
        self.form.show_errors({i["path"]: i["message"] for i in issues if i["path"]})
        lines = [f"{i['path']}: {i['message']}" if i["path"] else i["message"] for i in issues]
        self.problems.setText(f"{heading}: " + "\n".join(lines))
        self.problems.show()

    def _saved(self, row: dict[str, Any], previous: str | None) -> None:
        self.loading.stop()
        self.current = row["name"]
        self._set_dirty(False)
        self.delete_button.setVisible(True)
        if previous and previous != row["name"]:
            self.toast("success", f"Renamed connector '{previous}' to '{row['name']}'")
        else:
            self.toast("success", f"Saved connector '{row['name']}'")
        self.refresh()

    def _save_failed(self, exc: BaseException) -> None:
        self.loading.stop()
        self.toast("error", one_line(exc))

    def test_connection(self) -> None:
        self.test_seq += 1
        seq = self.test_seq
        self._badge("busy", "Testing…")
        self.test_button.setEnabled(False)
        job = self.engine.connectors.test(
            self.connector_type(), self.role(), self.form.value(), self.name.text() or "test"
        )
        self.bridge.call(
            job,
            lambda result: self._tested(seq, result),
            lambda exc: self._tested(seq, {"ok": False, "error": one_line(exc)}),
        )

    def _tested(self, seq: int, result: dict[str, Any]) -> None:
        if seq != self.test_seq:
            return  # the user moved on (another connector, another test): not this form's result
        self.test_button.setEnabled(True)
        if result["ok"]:
            detail = f": {one_line(result['detail'])}" if result.get("detail") else ""
            self._badge("ok", f"✓ Connected ({result.get('seconds', 0):.2f} s){detail}")
        else:
            self._badge("error", f"✕ {one_line(result.get('error') or 'failed')}")

    def _badge(self, kind: str, text: str) -> None:
        self.badge.setProperty("kind", kind)
        self.badge.setStyleSheet(BADGE_STYLE[kind])
        self.badge.setText(text)
        self.badge.show()

    def delete(self) -> None:
        if self.current is None:
            return
        name = self.current
        if not self.main_window.confirm(
            "Delete connector",
            f"Delete the saved connector '{name}'? Pipelines that use it keep their own copy.",
        ):
            return
        self.loading.start("Deleting…")
        self.bridge.call(
            self.engine.call(self.engine.connectors.delete, name),
            lambda _ok: self._deleted(name),
            self._error,
        )

    def _deleted(self, name: str) -> None:
        self.loading.stop()
        self.toast("info", f"Deleted connector '{name}'")
        self._start_new()
        self.refresh()

    def browse_tags(self) -> None:
        config = self.form.value()
        if not str(config.get("endpoint") or "").strip():
            self._show_problems(
                [{"path": "endpoint", "message": "enter the server's endpoint"}], "Cannot browse"
            )
            return
        self.browser = TagBrowser(self, config)
        self.browser.accepted.connect(self._add_picked)
        self.browser.show()

    def _add_picked(self) -> None:
        picked = self.browser.checked() if self.browser else []
        value = self.form.value()
        nodes = list(value.get("nodes", []))
        nodes += [n for n in picked if n not in nodes]
        value["nodes"] = nodes
        self.form.set_value(value)
        self._mark_dirty()
        self.toast("info", f"Added {len(picked)} nodes")
