"""The properties panel: a form generated from the selected node's config JSON schema (rule 4),
or the pipeline's own fields when no node is selected. Every edit becomes a document command;
the panel re-reads the document when it changes (an undo shows at once)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QFormLayout, QLabel, QLineEdit, QScrollArea, QVBoxLayout, QWidget

from ui.editor.document import PipelineDocument
from ui.widgets.schema_form import SchemaForm

PIPELINE_FIELDS = ("name", "description", "schedule", "error_handling")


def _without_type(schema: dict[str, Any]) -> dict[str, Any]:
    """A transform's schema without its `type` (the node's type is fixed; the palette chose it)."""
    schema = copy.deepcopy(schema)
    schema.get("properties", {}).pop("type", None)
    if "required" in schema:
        schema["required"] = [r for r in schema["required"] if r != "type"]
    return schema


def pipeline_schema() -> dict[str, Any]:
    from engine.spec.models import GraphPipeline

    schema = GraphPipeline.model_json_schema()
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k in PIPELINE_FIELDS}
    schema["required"] = ["name"]
    return schema


class PropertiesPanel(QWidget):
    def __init__(
        self,
        document: PipelineDocument,
        node_types: list[dict[str, Any]],
        secret_names: Callable[[], list[str]] | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.document = document
        self.types = {t["key"]: t for t in node_types}
        self.secret_names = secret_names
        self.node_id: str | None = None
        self.form: SchemaForm | None = None
        self._issues: list[dict[str, Any]] = []
        self._pipeline_schema: dict[str, Any] | None = None

        self.title = QLabel()
        self.title.setObjectName("PropertiesTitle")
        self.title.setStyleSheet("font-weight: 600; font-size: 14px;")
        self.description = QLabel(wordWrap=True)
        self.id_edit = QLineEdit()
        self.id_edit.setObjectName("node_id")
        self.name_edit = QLineEdit(placeholderText="(the id)")
        self.name_edit.setObjectName("node_name")
        self.id_row = QWidget()
        rows = QFormLayout(self.id_row)
        rows.setContentsMargins(0, 0, 0, 0)
        rows.addRow("Id", self.id_edit)
        rows.addRow("Label", self.name_edit)
        self.form_host = QVBoxLayout()
        self.form_host.setContentsMargins(0, 0, 0, 0)
        body = QWidget()
        column = QVBoxLayout(body)
        column.addWidget(self.title)
        column.addWidget(self.description)
        column.addWidget(self.id_row)
        column.addLayout(self.form_host)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(280)

        self.id_edit.editingFinished.connect(self._rename)
        self.name_edit.editingFinished.connect(self._relabel)
        document.changed.connect(self._on_document_changed)
        document.renamed.connect(self._renamed)
        self.show_node(None)

    # ---- what is shown --------------------------------------------------------------------------
    def show_node(self, node_id: str | None) -> None:
        node = self.document.node(node_id) if node_id else None
        self.node_id = node["id"] if node else None
        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
            self.form = None
        if node is None:
            self._show_pipeline()
            return
        info = self.types.get(_key(node), {})
        self.title.setText(f"{info.get('title', _key(node))}  ·  {node['id']}")
        self.description.setText(info.get("description", ""))
        self.id_row.setVisible(True)
        self.id_edit.setText(node["id"])
        self.name_edit.setText(node.get("name") or "")
        schema = info.get("config_schema") or {"type": "object", "properties": {}}
        if node["kind"] == "transform":
            schema = _without_type(schema)
        self.form = SchemaForm(schema, self._config_of(node), self.secret_names)
        self.form.changed.connect(self._form_changed)
        self.form_host.addWidget(self.form)
        self.form.show()
        self.show_issues(self._issues)

    def _show_pipeline(self) -> None:
        self.title.setText("Pipeline")
        self.description.setText("Select a node to edit it; these are the pipeline's own fields.")
        self.id_row.setVisible(False)
        if self._pipeline_schema is None:
            self._pipeline_schema = pipeline_schema()
        self.form = SchemaForm(self._pipeline_schema, self._pipeline_value(), self.secret_names)
        self.form.changed.connect(self._form_changed)
        self.form_host.addWidget(self.form)
        self.form.show()

    def _pipeline_value(self) -> dict[str, Any]:
        return {k: self.document.get(k) for k in PIPELINE_FIELDS if self.document.get(k) is not None}

    @staticmethod
    def _config_of(node: dict[str, Any]) -> dict[str, Any]:
        if node["kind"] == "transform":
            return {k: v for k, v in (node.get("transform") or {}).items() if k != "type"}
        return copy.deepcopy(node.get("config") or {})

    # ---- edits -> commands ------------------------------------------------------------------------
    def _form_changed(self) -> None:
        if self.form is None:
            return
        value = self.form.value()
        if self.node_id is None:
            for key in PIPELINE_FIELDS:
                self.document.set_field(key, value.get(key))
            return
        node = copy.deepcopy(self.document.node(self.node_id))
        if node["kind"] == "transform":
            node["transform"] = {"type": node["transform"]["type"], **value}
        else:
            node["config"] = value
        self.document.set_node(self.node_id, node, f"Edit {self.node_id}")

    def _rename(self) -> None:
        new = self.id_edit.text().strip()
        if self.node_id and new and new != self.node_id:
            old = self.node_id
            if not self.document.rename_node(old, new):
                self.id_edit.setText(old)

    def _renamed(self, old: str, new: str) -> None:
        if self.node_id == old:
            self.node_id = new

    def _relabel(self) -> None:
        if not self.node_id:
            return
        node = copy.deepcopy(self.document.node(self.node_id))
        label = self.name_edit.text().strip()
        if label and label != node["id"]:
            node["name"] = label
        else:
            node.pop("name", None)
        self.document.set_node(self.node_id, node, f"Label {self.node_id}")

    # ---- document -> panel --------------------------------------------------------------------------
    def _on_document_changed(self, touched) -> None:
        if self.node_id is not None and self.document.node(self.node_id) is None:
            self.show_node(None)
            return
        if self.form is None:
            return
        if self.node_id is None:
            wanted = self._pipeline_value()
        elif touched is None or self.node_id in touched:
            node = self.document.node(self.node_id)
            wanted = self._config_of(node)
            if self.id_edit.text() != node["id"]:
                self.id_edit.setText(node["id"])
            title = self.types.get(_key(node), {}).get("title", _key(node))
            self.title.setText(f"{title}  ·  {node['id']}")
            if self.name_edit.text() != (node.get("name") or ""):
                self.name_edit.setText(node.get("name") or "")
        else:
            return
        if self.form.value() != wanted:
            # A change from elsewhere (undo, the canvas): reload without echoing it back.
            self.form.blockSignals(True)
            try:
                self.form.set_value(wanted)
            finally:
                self.form.blockSignals(False)

    def show_issues(self, issues: list[dict[str, Any]]) -> None:
        """Mark the shown node's fields that validation complains about."""
        self._issues = issues
        if self.form is None or self.node_id is None:
            return
        node = self.document.node(self.node_id)
        if node is None:
            return
        prefix = f"nodes[{self.document.index_of(self.node_id)}]."
        section = "transform." if node["kind"] == "transform" else "config."
        errors = {}
        for issue in issues:
            path = issue.get("path") or ""
            if path.startswith(prefix + section):
                errors[path[len(prefix + section) :]] = issue["message"]
        self.form.show_errors(errors)


def _key(node: dict[str, Any]) -> str:
    from engine.api.pipelines import node_key

    return node_key(node)
