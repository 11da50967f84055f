"""A form generated from a pydantic JSON schema (architecture rule 4: no hand-written node forms).

`SchemaForm(schema, value, secret_names)` builds one editor per property: enums -> combo,
numbers -> spin boxes with the schema's bounds, booleans -> check box, lists -> editable rows,
nested objects -> sub-forms, `anyOf` -> a variant picker, `{"secret": NAME}` -> a secret picker.

Round trip: `.value()` holds the fields that were given to `set_value` or edited since, plus the
required ones. Unset optional fields are left out (the model's defaults apply), so a config read
into the form and written back without edits is the same dict.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

SecretNames = Callable[[], list[str]]
SECRET_FIELD = re.compile(r"(^|_)(password|passwd|token|secret|api_key|secret_access_key)$", re.IGNORECASE)
INT_LIMIT = 2**31 - 1
ERROR_STYLE = "border: 1px solid #d9534f;"


def is_secret_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secret"} and isinstance(value["secret"], str)


def parse_path(path: str) -> list[str]:
    """`"a.b[0].c"`, `"/a/b/0/c"` and `"$.a.b"` -> `["a", "b", "0", "c"]`."""
    path = path.strip().removeprefix("$").strip("./")
    return [p for p in re.split(r"[./\[\]]+", path) if p]


class Resolver:
    """Follows `$ref` into the root schema's `$defs` and flattens single-entry `allOf`."""

    def __init__(self, root: dict):
        self.root = root
        self.building: list[str] = []  # the $refs being built, outermost first

    def __call__(self, schema: dict | bool | None) -> dict:
        if not isinstance(schema, dict):
            return {}
        seen = 0
        while "$ref" in schema and seen < 32:
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        if "allOf" in schema and len(schema["allOf"]) == 1:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            schema = {**self(schema["allOf"][0]), **rest}
        return schema


# ---- editors ------------------------------------------------------------------------------------
class Editor(QWidget):
    """One value of the form. `changed` fires on user edits (not on `set_value`)."""

    changed = Signal()

    def __init__(self, schema: dict, resolve: Resolver, secrets: SecretNames | None):
        super().__init__()
        self.schema, self.resolve, self.secrets = schema, resolve, secrets
        self._loading = False

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def matches(self, value: Any) -> bool:
        """Can this editor hold `value` (used by the anyOf variant picker)?"""
        return True

    def _emit(self, *_args) -> None:
        if not self._loading:
            self.changed.emit()

    # A container (sub-form, list, mapping) shows an error of its own as a line above its fields:
    # a red border set on it would be inherited by every field inside (style sheets cascade).
    CONTAINER = False

    def show_error(self, parts: list[str], message: str) -> None:
        self.setToolTip(message)
        if not self.CONTAINER:
            self.setStyleSheet(ERROR_STYLE)
            return
        label = getattr(self, "own_error", None)
        if label is None:
            label = self.own_error = QLabel()
            label.setObjectName("form_error")
            label.setStyleSheet("color: #d9534f;")
            label.setWordWrap(True)
            self.layout().insertWidget(0, label)
        label.setText(message)
        label.show()

    def clear_errors(self) -> None:
        self.setStyleSheet("")
        self.setToolTip(self.schema.get("description", ""))
        label = getattr(self, "own_error", None)
        if label is not None:
            label.hide()

    def drop_title(self) -> None:
        """The editor sits in a labelled row: a frame of its own shows no second title."""

    def _load(self, fn: Callable[[], None]) -> None:
        self._loading = True
        try:
            fn()
        finally:
            self._loading = False


class _Single(Editor):
    """An editor around one input widget, laid out without margins."""

    def _wrap(self, widget: QWidget) -> None:
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(widget)
        self.setToolTip(self.schema.get("description", ""))


class SecretEditor(_Single):
    """A text field that may hold a reference to a stored secret. With the key button on it is a
    picker of secret names and its value is `{"secret": NAME}`; off, it is plain text. Fields named
    like secrets start with the key on; any other text field shows the key once its value is a
    reference."""

    def __init__(self, schema, resolve, secrets, nullable: bool = True, secret_mode: bool = True):
        super().__init__(schema, resolve, secrets)
        self.nullable = nullable
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        self.text = self.edit = QLineEdit()
        self.text.setPlaceholderText("(not set)" if nullable else str(schema.get("default", "") or ""))
        self.mode = QToolButton()
        self.mode.setText("Secret")
        self.mode.setCheckable(True)
        self.mode.setToolTip("a secret reference (its value stays in the keyring, never in the config)")
        self.picker = QComboBox()
        self.picker.setEditable(True)
        self.picker.lineEdit().setPlaceholderText("secret name")
        self.picker.setObjectName("secret_picker")
        layout.addWidget(self.text, 1)
        layout.addWidget(self.picker, 1)
        layout.addWidget(self.mode)
        self._wrap(row)
        self.mode.setVisible(secret_mode)
        self.mode.setChecked(secret_mode)
        self._set_mode(secret_mode)
        self.refresh_names()
        self.mode.toggled.connect(self._set_mode)
        self.mode.toggled.connect(self._emit)
        self.picker.currentTextChanged.connect(self._emit)
        self.text.textEdited.connect(self._emit)
        if isinstance(schema.get("default"), str):
            self.text.setText(schema["default"])

    def refresh_names(self) -> None:
        current = self.picker.currentText()
        names = sorted(set(self.secrets() if self.secrets else []))
        self._loading, was = True, self._loading
        self.picker.clear()
        self.picker.addItems(names)
        self.picker.setCurrentText(current)
        self._loading = was

    def _set_mode(self, secret: bool) -> None:
        self.picker.setVisible(secret)
        self.text.setVisible(not secret)
        if secret:
            self.refresh_names()

    def value(self):
        if self.mode.isChecked():
            name = self.picker.currentText().strip()
            return {"secret": name} if name else (None if self.nullable else "")
        text = self.text.text()
        return None if self.nullable and text == "" else text

    def set_value(self, value):
        def load():
            if is_secret_ref(value):
                self.mode.setVisible(True)
                self.mode.setChecked(True)
                self.picker.setCurrentText(value["secret"])
            else:
                if value is not None or not self.mode.isChecked():
                    self.mode.setChecked(False)
                self.text.setText("" if value is None else str(value))

        self._load(load)

    def matches(self, value):
        return isinstance(value, str) or is_secret_ref(value)


def StringEditor(schema, resolve, secrets, nullable: bool = False) -> SecretEditor:
    """A plain text field (it turns into a secret picker if its value is a secret reference)."""
    return SecretEditor(schema, resolve, secrets, nullable=nullable, secret_mode=False)


class EnumEditor(_Single):
    def __init__(self, schema, resolve, secrets, nullable: bool = False):
        super().__init__(schema, resolve, secrets)
        self.options = list(schema["enum"]) if "enum" in schema else [schema.get("const")]
        if nullable and None not in self.options:
            self.options.insert(0, None)
        self.combo = QComboBox()
        for option in self.options:
            self.combo.addItem("(not set)" if option is None else str(option))
        self.combo.setEnabled(len(self.options) > 1)
        self.combo.currentIndexChanged.connect(self._emit)
        self._wrap(self.combo)
        if "default" in schema and schema["default"] in self.options:
            self.combo.setCurrentIndex(self.options.index(schema["default"]))

    def value(self):
        return self.options[self.combo.currentIndex()] if self.options else None

    def set_value(self, value):
        if value is None and None not in self.options:
            return
        if value not in self.options:  # keep an unknown value rather than lose it
            self.options.append(value)
            self.combo.addItem(str(value))
        self._load(lambda: self.combo.setCurrentIndex(self.options.index(value)))

    def matches(self, value):
        return value in self.options


class BoolEditor(_Single):
    def __init__(self, schema, resolve, secrets):
        super().__init__(schema, resolve, secrets)
        self.check = QCheckBox()
        self.check.toggled.connect(self._emit)
        self._wrap(self.check)
        self.layout().addStretch(1)  # the box keeps its size, so a click on it lands on it
        self.check.setChecked(bool(schema.get("default", False)))

    def value(self):
        return self.check.isChecked()

    def set_value(self, value):
        self._load(lambda: self.check.setChecked(bool(value)))

    def matches(self, value):
        return isinstance(value, bool)


class _ExactDoubleSpin(QDoubleSpinBox):
    """Shows 0.2 as "0.2", not "0.200000": many decimals kept, trailing zeros not shown."""

    def textFromValue(self, value: float) -> str:
        return format(value, ".12g")

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()


def _bounds(schema: dict, step: float) -> tuple[float | None, float | None]:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + step
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - step
    return low, high


class NumberEditor(_Single):
    def __init__(self, schema, resolve, secrets, integer: bool):
        super().__init__(schema, resolve, secrets)
        self.integer = integer
        self._int_valued = integer
        if integer:
            self.spin: QSpinBox | QDoubleSpinBox = QSpinBox()
            low, high = _bounds(schema, 1)
            self.spin.setRange(
                int(low if low is not None else -INT_LIMIT), int(high if high is not None else INT_LIMIT)
            )
        else:
            self.spin = _ExactDoubleSpin()
            self.spin.setDecimals(12)
            low, high = _bounds(schema, 1e-9)
            self.spin.setRange(low if low is not None else -1e15, high if high is not None else 1e15)
        self.spin.setKeyboardTracking(True)
        self.spin.valueChanged.connect(self._emit)
        self._wrap(self.spin)
        default = schema.get("default")
        if isinstance(default, int | float) and not isinstance(default, bool):
            self.set_value(default)

    def value(self):
        v = self.spin.value()
        if self.integer or (self._int_valued and float(v).is_integer()):
            return int(v)
        return v

    def set_value(self, value):
        number = float(value) if isinstance(value, int | float) else 0.0
        self._int_valued = self.integer or (isinstance(value, int) and not isinstance(value, bool))
        if math.isfinite(number):
            self._load(lambda: self.spin.setValue(int(number) if self.integer else number))

    def matches(self, value):
        if isinstance(value, bool):
            return False
        return isinstance(value, int) if self.integer else isinstance(value, int | float)


class JsonEditor(_Single):
    """Anything the form has no widget for: the value as JSON text (a plain word stays a string)."""

    def __init__(self, schema, resolve, secrets):
        super().__init__(schema, resolve, secrets)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("JSON")
        self.edit.textEdited.connect(self._emit)
        self._wrap(self.edit)
        if "default" in schema:
            self.set_value(schema["default"])

    def value(self):
        text = self.edit.text().strip()
        if text == "":
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def set_value(self, value):
        self._load(lambda: self.edit.setText("" if value is None else json.dumps(value)))


class NullableEditor(Editor):
    """`anyOf [X, null]`: a check box turns the value on; off means null."""

    def __init__(self, inner: Editor):
        super().__init__(inner.schema, inner.resolve, inner.secrets)
        self.inner = inner
        self.on = QCheckBox()
        self.on.setToolTip("set a value (off: null)")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.on, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(inner, 1)
        inner.setEnabled(False)
        self.on.toggled.connect(inner.setEnabled)
        self.on.toggled.connect(self._emit)
        inner.changed.connect(self._emit)

    def value(self):
        return self.inner.value() if self.on.isChecked() else None

    def set_value(self, value):
        def load():
            self.on.setChecked(value is not None)
            if value is not None:
                self.inner.set_value(value)

        self._load(load)

    def matches(self, value):
        return value is None or self.inner.matches(value)

    def show_error(self, parts, message):
        self.inner.show_error(parts, message)

    def clear_errors(self):
        self.inner.clear_errors()

    def drop_title(self):
        self.inner.drop_title()


class ObjectEditor(Editor):
    """A nested form: one row per property; unset optional properties stay out of `value()`."""

    CONTAINER = True

    def __init__(self, schema, resolve, secrets, framed: bool = False):
        super().__init__(schema, resolve, secrets)
        self.required = set(schema.get("required", []))
        self.fields: dict[str, Editor] = {}
        self.defaults: dict[str, Any] = {}
        self.touched: set[str] = set()
        self.extra: dict[str, Any] = {}  # keys the schema does not know, kept as they came
        self.error_labels: dict[str, QLabel] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        body: QWidget = self
        self.box: QGroupBox | None = None
        if framed:
            body = self.box = QGroupBox(humanize(schema.get("title", "")))
            outer.addWidget(body)
        self.layout_ = QFormLayout()
        self.layout_.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        if framed:
            body.setLayout(self.layout_)
        else:
            outer.addLayout(self.layout_)
        for name, prop in schema.get("properties", {}).items():
            editor = build_editor(prop, resolve, secrets, name=name)
            editor.drop_title()  # the row's label names it
            editor.setObjectName(f"field_{name}")
            editor.changed.connect(lambda n=name: self._field_changed(n))
            title = humanize(
                prop.get("title") or resolve(prop).get("title") or name.replace("_", " ").capitalize()
            )
            label = QLabel(title + (" *" if name in self.required else ""))
            label.setToolTip(prop.get("description", "") or resolve(prop).get("description", ""))
            error = QLabel()
            error.setStyleSheet("color: #d9534f;")
            error.setWordWrap(True)
            error.hide()
            cell = QWidget()
            cell_layout = QVBoxLayout(cell)
            cell_layout.setContentsMargins(0, 0, 0, 0)
            cell_layout.setSpacing(2)
            cell_layout.addWidget(editor)
            cell_layout.addWidget(error)
            self.layout_.addRow(label, cell)
            self.fields[name] = editor
            self.defaults[name] = _default_of(resolve(prop))
            self.error_labels[name] = error

    def drop_title(self) -> None:
        if self.box is not None:
            self.box.setTitle("")

    def _field_changed(self, name: str) -> None:
        self.touched.add(name)
        self._emit()

    def value(self) -> dict:
        out: dict[str, Any] = {}
        for name, editor in self.fields.items():
            if name in self.touched:
                out[name] = editor.value()
            elif name in self.required:
                value = editor.value()
                if value not in ("", None):  # an empty required field stays missing: validation says so
                    out[name] = value
        out.update(self.extra)
        return out

    def set_value(self, value):
        value = value if isinstance(value, dict) else {}

        def load():
            self.touched = set()
            self.extra = {k: v for k, v in value.items() if k not in self.fields}
            for name, editor in self.fields.items():
                if name in value:
                    editor.set_value(value[name])
                    self.touched.add(name)
                else:
                    editor.set_value(self.defaults[name])

        self._load(load)

    def matches(self, value):
        if not isinstance(value, dict):
            return False
        if self.schema.get("additionalProperties") is False and set(value) - set(self.fields):
            return False
        for name, editor in self.fields.items():
            const = self.resolve(editor.schema).get("const")
            if const is not None and value.get(name, const) != const:
                return False
        return self.required <= set(value)

    def show_error(self, parts, message):
        if not parts or parts[0] not in self.fields:
            super().show_error(parts, message)
            return
        name = parts[0]
        self.fields[name].show_error(parts[1:], message)
        self.error_labels[name].setText(message)
        self.error_labels[name].show()

    def clear_errors(self):
        super().clear_errors()
        for name, editor in self.fields.items():
            editor.clear_errors()
            self.error_labels[name].hide()


def _default_of(schema: dict) -> Any:
    if "default" in schema:
        return schema["default"]
    if "anyOf" in schema or "oneOf" in schema:
        return None
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    return {"string": "", "integer": 0, "number": 0.0, "boolean": False, "array": [], "object": {}}.get(kind)


class ListEditor(Editor):
    """Rows of item editors, each with a remove button, and an Add button."""

    CONTAINER = True

    def __init__(self, schema, resolve, secrets, name: str = ""):
        super().__init__(schema, resolve, secrets)
        self.item_schema = schema.get("items", {})
        self.item_name = name
        self.rows: list[tuple[QWidget, Editor]] = []
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(2)
        self.add_button = QPushButton("Add")
        self.add_button.setObjectName("list_add")
        self.add_button.clicked.connect(lambda: (self.add_row(), self._emit()))
        self.layout_.addWidget(self.add_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.setToolTip(schema.get("description", ""))

    def add_row(self, value: Any = None) -> Editor:
        editor = build_editor(self.item_schema, self.resolve, self.secrets, name=self.item_name)
        if value is not None:
            editor.set_value(value)
        else:
            editor.set_value(_default_of(self.resolve(self.item_schema)))
        row = QFrame()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(editor, 1)
        remove = QToolButton()
        remove.setText("✕")
        remove.setObjectName("list_remove")
        remove.setToolTip("remove")
        layout.addWidget(remove, 0, Qt.AlignmentFlag.AlignTop)
        remove.clicked.connect(lambda: (self.remove_row(row), self._emit()))
        editor.changed.connect(self._emit)
        self.layout_.insertWidget(len(self.rows), row)
        self.rows.append((row, editor))
        return editor

    def remove_row(self, row: QWidget) -> None:
        self.rows = [(r, e) for r, e in self.rows if r is not row]
        row.setParent(None)
        row.deleteLater()

    def value(self):
        return [editor.value() for _row, editor in self.rows]

    def set_value(self, value):
        def load():
            for row, _editor in list(self.rows):
                self.remove_row(row)
            for item in value if isinstance(value, list) else []:
                self.add_row(item)

        self._load(load)

    def matches(self, value):
        return isinstance(value, list)

    def show_error(self, parts, message):
        if parts and parts[0].isdigit() and int(parts[0]) < len(self.rows):
            self.rows[int(parts[0])][1].show_error(parts[1:], message)
        else:
            super().show_error(parts, message)

    def clear_errors(self):
        super().clear_errors()
        for _row, editor in self.rows:
            editor.clear_errors()


class TupleEditor(Editor):
    """A fixed-length list (`prefixItems`), e.g. a `[wind, power]` point."""

    def __init__(self, schema, resolve, secrets):
        super().__init__(schema, resolve, secrets)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.items = [build_editor(s, resolve, secrets) for s in schema["prefixItems"]]
        for editor in self.items:
            layout.addWidget(editor)
            editor.changed.connect(self._emit)

    def value(self):
        return [e.value() for e in self.items]

    def set_value(self, value):
        values = list(value) if isinstance(value, list | tuple) else []
        self._load(lambda: [e.set_value(v) for e, v in zip(self.items, values, strict=False)])

    def matches(self, value):
        return isinstance(value, list | tuple) and len(value) == len(self.items)


class MappingEditor(Editor):
    """An object of free keys (`additionalProperties` with a schema): rows of key and value."""

    CONTAINER = True

    def __init__(self, schema, resolve, secrets):
        super().__init__(schema, resolve, secrets)
        extra = schema.get("additionalProperties")
        self.value_schema = extra if isinstance(extra, dict) else {}
        self.rows: list[tuple[QWidget, QLineEdit, Editor]] = []
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(2)
        add = QPushButton("Add")
        add.setObjectName("mapping_add")
        add.clicked.connect(lambda: (self.add_row("", None), self._emit()))
        self.layout_.addWidget(add, 0, Qt.AlignmentFlag.AlignLeft)

    def add_row(self, key: str, value: Any) -> None:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        key_edit = QLineEdit(key)
        key_edit.setPlaceholderText("key")
        editor = build_editor(self.value_schema, self.resolve, self.secrets)
        editor.set_value(value if value is not None else _default_of(self.resolve(self.value_schema)))
        remove = QToolButton()
        remove.setText("✕")
        remove.clicked.connect(lambda: (self._remove(row), self._emit()))
        for w in (key_edit, editor, remove):
            layout.addWidget(w)
        key_edit.textEdited.connect(self._emit)
        editor.changed.connect(self._emit)
        self.layout_.insertWidget(len(self.rows), row)
        self.rows.append((row, key_edit, editor))

    def _remove(self, row: QWidget) -> None:
        self.rows = [r for r in self.rows if r[0] is not row]
        row.setParent(None)
        row.deleteLater()

    def value(self):
        return {k.text(): e.value() for _r, k, e in self.rows if k.text()}

    def set_value(self, value):
        def load():
            for row, _k, _e in list(self.rows):
                self._remove(row)
            for key, item in (value or {}).items() if isinstance(value, dict) else []:
                self.add_row(str(key), item)

        self._load(load)

    def matches(self, value):
        return isinstance(value, dict)


class EmptyObjectEditor(Editor):
    """An object that takes no settings (`additionalProperties: false`, no properties): a note
    instead of a field. Its value is `{}`."""

    def __init__(self, schema, resolve, secrets):
        super().__init__(schema, resolve, secrets)
        note = QLabel("Nothing to set for this choice.")
        note.setObjectName("no_settings")
        note.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(note)

    def value(self):
        return {}

    def set_value(self, value):
        pass

    def matches(self, value):
        return value == {}


class UnionEditor(Editor):
    """`anyOf` of several shapes: a combo picks the variant, each variant has its own editor."""

    def __init__(self, schema, resolve, secrets, variants: list[dict], name: str = ""):
        super().__init__(schema, resolve, secrets)
        self.variants = [build_editor(v, resolve, secrets, name=name) for v in variants]
        self.picker = QComboBox()
        self.picker.setObjectName("variant_picker")
        self.stack = QStackedWidget()
        for variant, editor in zip(variants, self.variants, strict=True):
            self.picker.addItem(_variant_title(resolve(variant)))
            self.stack.addWidget(editor)
            editor.changed.connect(self._emit)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.picker)
        layout.addWidget(self.stack)
        self.picker.currentIndexChanged.connect(self.stack.setCurrentIndex)
        self.picker.currentIndexChanged.connect(self._emit)
        self.stack.currentChanged.connect(self._fit)
        self._fit(self.stack.currentIndex())
        default = schema.get("default")
        if default is not None:
            self.set_value(default)

    def _fit(self, index: int) -> None:
        """The stack is as tall as the shown variant, not as the tallest one."""
        for i in range(self.stack.count()):
            policy = QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored
            self.stack.widget(i).setSizePolicy(policy, policy)
        self.stack.adjustSize()

    def value(self):
        return self.variants[self.picker.currentIndex()].value()

    def set_value(self, value):
        index = next((i for i, e in enumerate(self.variants) if e.matches(value)), 0)

        def load():
            self.picker.setCurrentIndex(index)
            self.stack.setCurrentIndex(index)
            self.variants[index].set_value(value)

        self._load(load)

    def matches(self, value):
        return any(e.matches(value) for e in self.variants)

    def show_error(self, parts, message):
        self.variants[self.picker.currentIndex()].show_error(parts, message)

    def clear_errors(self):
        for e in self.variants:
            e.clear_errors()


def humanize(title: str) -> str:
    """A model's class name as words: "NoParameters" -> "No parameters"; other titles as they are."""
    if " " in title or not re.fullmatch(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*", title):
        return title
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", title).split()
    return " ".join([words[0], *(w.lower() for w in words[1:])])


def _variant_title(schema: dict) -> str:
    if schema.get("title"):
        return humanize(schema["title"])
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))[:40]
    if "const" in schema:
        return str(schema["const"])
    kind = schema.get("type", "value")
    if kind == "array":
        return f"list of {schema.get('items', {}).get('type', 'values')}"
    return {"string": "text", "integer": "whole number", "number": "number", "boolean": "yes/no"}.get(
        kind, kind
    )


def build_editor(schema: dict, resolve: Resolver, secrets: SecretNames | None, name: str = "") -> Editor:
    """The editor for one schema node. A recursive `$ref` (a condition of conditions) met again
    inside itself becomes JSON text, so the form stays finite."""
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref is not None:
        if ref in resolve.building:
            return JsonEditor(resolve(schema), resolve, secrets)
        resolve.building.append(ref)
        try:
            return _build_editor(schema, resolve, secrets, name)
        finally:
            resolve.building.pop()
    return _build_editor(schema, resolve, secrets, name)


def _build_editor(schema: dict, resolve: Resolver, secrets: SecretNames | None, name: str) -> Editor:
    raw = schema
    schema = resolve(schema)
    raw_variants = schema.get("anyOf", schema.get("oneOf", []))
    variants = [resolve(v) for v in raw_variants]
    non_null = [v for v in variants if v.get("type") != "null"]
    raw_non_null = [r for r, v in zip(raw_variants, variants, strict=True) if v.get("type") != "null"]
    nullable = len(non_null) < len(variants)
    if variants:
        base = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        if SECRET_FIELD.search(name) and all(v.get("type") in ("string", "object") for v in non_null):
            return SecretEditor(base, resolve, secrets, nullable=nullable)
        if len(non_null) == 1:
            overrides = {k: v for k, v in base.items() if k != "default"}
            inner_schema = {**non_null[0], **overrides}
            if "enum" in inner_schema and nullable:
                return EnumEditor(inner_schema, resolve, secrets, nullable=True)
            if inner_schema.get("type") == "string" and "enum" not in inner_schema:
                return StringEditor(inner_schema, resolve, secrets, nullable=nullable)
            # the raw variant keeps its $ref, so a recursive schema is seen as such
            inner = build_editor({**raw_non_null[0], **overrides}, resolve, secrets, name=name)
            return NullableEditor(inner) if nullable else inner
        union = UnionEditor(base, resolve, secrets, raw_non_null, name=name)
        return NullableEditor(union) if nullable else union
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the same as anyOf with null
        return build_editor(
            {**schema, "type": None, "anyOf": [{**schema, "type": k} for k in kind]}, resolve, secrets, name
        )
    if "enum" in schema or "const" in schema:
        return EnumEditor(schema, resolve, secrets)
    if kind == "string":
        if SECRET_FIELD.search(name):
            return SecretEditor(schema, resolve, secrets, nullable=False)
        return StringEditor(schema, resolve, secrets)
    if kind == "boolean":
        return BoolEditor(schema, resolve, secrets)
    if kind in ("integer", "number"):
        return NumberEditor(schema, resolve, secrets, integer=kind == "integer")
    if kind == "array":
        if "prefixItems" in schema:
            return TupleEditor(schema, resolve, secrets)
        return ListEditor(schema, resolve, secrets, name=name)
    if kind == "object" or "properties" in schema:
        if schema.get("properties"):
            return ObjectEditor(schema, resolve, secrets, framed=raw is not resolve.root)
        if schema.get("additionalProperties") is False:
            return EmptyObjectEditor(schema, resolve, secrets)
        if isinstance(schema.get("additionalProperties"), dict) and schema["additionalProperties"]:
            return MappingEditor(schema, resolve, secrets)
    return JsonEditor(schema, resolve, secrets)


# ---- the form -----------------------------------------------------------------------------------
class SchemaForm(QWidget):
    """A form for a pydantic model's JSON schema; `.value()` is the config dict."""

    changed = Signal()

    def __init__(
        self, schema: dict, value: dict | None = None, secret_names: SecretNames | None = None, parent=None
    ):
        super().__init__(parent)
        self.schema = schema
        self.resolve = Resolver(schema)
        self.secret_names = secret_names
        root = self.resolve(schema)
        if root.get("properties") or root.get("type") == "object":
            self.editor: Editor = ObjectEditor(root, self.resolve, secret_names)
        else:
            self.editor = build_editor(schema, self.resolve, secret_names)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editor)
        self.editor.changed.connect(self.changed)
        if value is not None:
            self.set_value(value)

    def value(self) -> dict:
        return self.editor.value()

    def set_value(self, value: dict) -> None:
        self.editor.set_value(value)

    def field(self, path: str) -> Editor | None:
        """The editor at a dotted path (`"deadband.type"`, `"nodes.0"`), for tests and focus."""
        editor: Editor = self.editor
        for part in parse_path(path):
            while isinstance(editor, NullableEditor | UnionEditor):
                editor = (
                    editor.inner
                    if isinstance(editor, NullableEditor)
                    else editor.variants[editor.picker.currentIndex()]
                )
            if isinstance(editor, ObjectEditor) and part in editor.fields:
                editor = editor.fields[part]
            elif isinstance(editor, ListEditor) and part.isdigit() and int(part) < len(editor.rows):
                editor = editor.rows[int(part)][1]
            else:
                return None
        return editor

    def show_errors(self, errors: dict[str, str]) -> None:
        """Mark the fields at these JSON paths (relative to the config) with their messages."""
        self.editor.clear_errors()
        for path, message in errors.items():
            self.editor.show_error(parse_path(path), message)

    def clear_errors(self) -> None:
        self.editor.clear_errors()
