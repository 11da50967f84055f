"""Connectors page: saved connector configurations, edited through schema forms, with "Test
connection" in the background and an OPC UA tag browser that picks nodes into the config."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
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
        self.resize(560, 520)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Name", "Node id", "Type"])
        self.tree.setColumnWidth(0, 220)
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
        future = self.page.engine.browse_opcua(self.config, node_id)
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
        self.status.setText(f"Browse failed: {exc}")

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
            d["connector_type"]: d for d in self.engine.connector_types()
        }
        self.secret_cache: list[str] = []
        self.current: str | None = None  # name of the saved connector being edited
        self.form: SchemaForm | None = None
        self.dirty = False
        self.browser: TagBrowser | None = None

        # left: the list, or its empty state
        self.list = QListWidget()
        self.list.currentItemChanged.connect(
            lambda item, _prev: item and self.edit(item.data(Qt.ItemDataRole.UserRole))
        )
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
        self.type_combo = QComboBox()
        for name, d in sorted(self.types.items()):
            self.type_combo.addItem(d["title"], name)
        self.role_combo = QComboBox()
        self.type_combo.currentIndexChanged.connect(self._type_changed)
        self.role_combo.currentIndexChanged.connect(lambda _i: self._build_form({}))
        header = QFormLayout()
        header.addRow("Name", self.name)
        header.addRow("Type", self.type_combo)
        header.addRow("Role", self.role_combo)
        self.form_area = QScrollArea()
        self.form_area.setWidgetResizable(True)
        self.badge = QLabel()
        self.badge.setObjectName("test_badge")
        self.badge.setWordWrap(True)
        self.badge.hide()
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
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        self.editor = QWidget()
        right_layout = QVBoxLayout(self.editor)
        right_layout.addLayout(header)
        right_layout.addWidget(self.form_area, 1)
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
        self.bridge.call(self.engine.call(self.engine.list_connectors), self._show_list, self._error)
        self.bridge.call(self.engine.call(self.engine.secret_names), self._got_secrets)

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
        self.toast("error", str(exc))

    # ---- editing ---------------------------------------------------------------------------
    def new_connector(self) -> None:
        self.current = None
        self.name.clear()
        self.list.clearSelection()
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

    def connector_type(self) -> str:
        return self.type_combo.currentData()

    def role(self) -> str:
        return self.role_combo.currentData() or "source"

    def _build_form(self, config: dict[str, Any]) -> None:
        d = self.types.get(self.connector_type(), {})
        schema = d.get("source_schema" if self.role() == "source" else "destination_schema") or {}
        self.form = SchemaForm(schema, config, secret_names=lambda: self.secret_cache)
        self.form.changed.connect(self._mark_dirty)
        self.form_area.setWidget(self.form)
        self.badge.hide()
        self.dirty = False
        self.browse_button.setVisible(self.connector_type() == "opc_ua" and self.role() == "source")
        self.delete_button.setEnabled(self.current is not None)

    def _mark_dirty(self) -> None:
        self.dirty = True

    def has_unsaved_changes(self) -> bool:
        return self.dirty

    # ---- actions ---------------------------------------------------------------------------
    def save(self) -> None:
        name = self.name.text().strip()
        args = (name, self.connector_type(), self.role(), self.form.value())
        self.loading.start("Saving…")
        self.bridge.call(
            self.engine.call(lambda: self.engine.save_connector(*args)), self._saved, self._save_failed
        )

    def _saved(self, row: dict[str, Any]) -> None:
        self.loading.stop()
        self.current = row["name"]
        self.dirty = False
        self.delete_button.setEnabled(True)
        self.toast("success", f"Saved connector '{row['name']}'")
        self.refresh()

    def _save_failed(self, exc: BaseException) -> None:
        self.loading.stop()
        self.toast("error", str(exc))

    def test_connection(self) -> None:
        self._badge("busy", "Testing…")
        self.test_button.setEnabled(False)
        job = self.engine.test_connection(
            self.connector_type(), self.role(), self.form.value(), self.name.text() or "test"
        )
        self.bridge.call(job, self._tested, lambda exc: self._tested({"ok": False, "error": str(exc)}))

    def _tested(self, result: dict[str, Any]) -> None:
        self.test_button.setEnabled(True)
        if result["ok"]:
            self._badge("ok", f"✓ Connected ({result.get('seconds', 0):.2f} s)")
        else:
            self._badge("error", f"✕ {result['error']}")

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
        self.bridge.call(
            self.engine.call(lambda: self.engine.delete_connector(name)),
            lambda _ok: self._deleted(name),
            self._error,
        )

    def _deleted(self, name: str) -> None:
        self.toast("info", f"Deleted connector '{name}'")
        self.new_connector()
        self.refresh()

    def browse_tags(self) -> None:
        self.browser = TagBrowser(self, self.form.value())
        self.browser.accepted.connect(self._add_picked)
        self.browser.show()

    def _add_picked(self) -> None:
        picked = self.browser.checked() if self.browser else []
        value = self.form.value()
        nodes = list(value.get("nodes", []))
        nodes += [n for n in picked if n not in nodes]
        value["nodes"] = nodes
        self.form.set_value(value)
        self.dirty = True
        self.toast("info", f"Added {len(picked)} nodes")
