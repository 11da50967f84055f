"""Drive a SchemaForm (ui/widgets/schema_form.py) as a user does: type into line edits and spin
boxes, click check boxes and Add buttons, pick combo items from their popups, recursively through
nested objects, lists, tuples, mappings, nullable values and anyOf unions.

Tests that build configs "through the GUI" use this instead of `editor.set_value`, so a form that a
user could not fill in (a widget missing, a signal not wired, a variant that cannot be picked) fails
the test. Every editor's `value()` is checked right after it is filled, with the field's path in the
message, so a driver bug fails where it happens rather than as a diff of the saved spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QToolButton,
    QWidget,
)

from ui.widgets.schema_form import (
    BoolEditor,
    Editor,
    EmptyObjectEditor,
    EnumEditor,
    JsonEditor,
    ListEditor,
    MappingEditor,
    NullableEditor,
    NumberEditor,
    ObjectEditor,
    SchemaForm,
    SecretEditor,
    TupleEditor,
    UnionEditor,
    is_secret_ref,
)

LEFT = Qt.MouseButton.LeftButton
CTRL = Qt.KeyboardModifier.ControlModifier


# ---- gestures -------------------------------------------------------------------------------------
def reach(widget: QWidget) -> None:
    """Scroll the widget into view, as a user scrolls to a field before using it."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:
        parent.ensureWidgetVisible(widget)


def click(qtbot, button: QAbstractButton, path: str) -> None:
    assert button.isEnabled(), f"{path}: {button.text() or type(button).__name__} is disabled"
    reach(button)
    qtbot.mouseClick(button, LEFT)


def type_text(qtbot, line: QLineEdit, text: str) -> None:
    """Select what the line holds (Ctrl+A) and type over it; an empty text is typed as a deletion."""
    reach(line)
    line.setFocus()
    qtbot.keyClick(line, Qt.Key.Key_A, CTRL)
    if text:
        qtbot.keyClicks(line, text)
    elif line.text():
        qtbot.keyClick(line, Qt.Key.Key_Backspace)
    else:  # already empty: an edit that ends where it began still says "the user set this"
        qtbot.keyClicks(line, "x")
        qtbot.keyClick(line, Qt.Key.Key_Backspace)


def pick(qtbot, combo: QComboBox, index: int, path: str) -> None:
    """Open the combo's popup and click the item, as a user picks it."""
    assert combo.isEnabled(), f"{path}: the combo is disabled"
    assert 0 <= index < combo.count(), f"{path}: no item {index} in {combo_items(combo)}"
    reach(combo)
    combo.showPopup()
    view = combo.view()
    qtbot.waitUntil(view.isVisible, timeout=30_000)
    item = view.model().index(index, combo.modelColumn(), view.rootIndex())
    view.scrollTo(item)
    qtbot.mouseClick(view.viewport(), LEFT, pos=view.visualRect(item).center())
    qtbot.waitUntil(lambda: not view.isVisible(), timeout=30_000)
    assert combo.currentIndex() == index, (
        f"{path}: clicked {combo.itemText(index)!r}, the combo shows {combo.currentText()!r}"
    )


def combo_items(combo: QComboBox) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


@contextmanager
def counting(editor: Editor) -> Iterator[list[None]]:
    """The `changed` signals the editor sends inside the block (one list entry each)."""
    seen: list[None] = []

    def note() -> None:
        seen.append(None)

    editor.changed.connect(note)
    try:
        yield seen
    finally:
        editor.changed.disconnect(note)


def check(editor: Editor, value: Any, path: str) -> None:
    got = editor.value()
    assert got == value, f"{path}: the {type(editor).__name__} holds {got!r}, wanted {value!r}"


# ---- one editor per kind ------------------------------------------------------------------------------
def fill_editor(qtbot, editor: Editor, value: Any, path: str) -> None:
    """Give `editor` the value `value` through its widgets; `path` names it in failures."""
    filler = FILLERS.get(type(editor))
    assert filler is not None, f"{path}: no driver for a {type(editor).__name__}"
    assert editor.isEnabled(), f"{path}: the {type(editor).__name__} is disabled"
    filler(qtbot, editor, value, path)
    if isinstance(editor, ObjectEditor):
        got = editor.value()
        for key, want in value.items():
            assert key in got, f"{path}.{key}: not in the value (the form did not see it set): {got!r}"
            assert got[key] == want, f"{path}.{key}: the form holds {got[key]!r}, wanted {want!r}"
    else:
        check(editor, value, path)


def fill_text(qtbot, editor: SecretEditor, value: Any, path: str) -> None:
    """A text field, or with its "Secret" key on, a picker of secret names."""
    if is_secret_ref(value):
        assert editor.mode.isVisibleTo(editor), f"{path}: a secret reference but no Secret button"
        if not editor.mode.isChecked():
            click(qtbot, editor.mode, path)
        name = value["secret"]
        if name in combo_items(editor.picker):  # a stored secret: pick it from the list
            pick(qtbot, editor.picker, editor.picker.findText(name), path)
        else:  # not stored yet: type its name
            line = editor.picker.lineEdit()
            assert line is not None, f"{path}: the secret picker cannot be typed into"
            type_text(qtbot, line, name)
        return
    assert value is None or isinstance(value, str), f"{path}: a text field cannot hold {value!r}"
    assert value is not None or editor.nullable, f"{path}: the field cannot be left unset"
    if editor.mode.isChecked():
        click(qtbot, editor.mode, path)
    type_text(qtbot, editor.text, value or "")


def fill_enum(qtbot, editor: EnumEditor, value: Any, path: str) -> None:
    assert value in editor.options, f"{path}: {value!r} is not one of {editor.options!r}"
    index = editor.options.index(value)
    if editor.combo.currentIndex() == index:
        if not editor.combo.isEnabled():  # a constant: nothing to pick, and nothing to say
            return
        # Already shown (the default): pick another and back, so the form writes it explicitly.
        pick(qtbot, editor.combo, (index + 1) % editor.combo.count(), path)
    pick(qtbot, editor.combo, index, path)


def fill_bool(qtbot, editor: BoolEditor, value: Any, path: str) -> None:
    assert isinstance(value, bool), f"{path}: a check box cannot hold {value!r}"
    if editor.check.isChecked() == value:  # the default: off and on again writes it explicitly
        click(qtbot, editor.check, path)
    click(qtbot, editor.check, path)


def number_text(editor: NumberEditor, value: Any) -> str:
    if editor.integer:
        return str(int(value))
    return editor.spin.textFromValue(float(value))


def fill_number(qtbot, editor: NumberEditor, value: Any, path: str) -> None:
    assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: not a number: {value!r}"
    spin: QAbstractSpinBox = editor.spin
    reach(spin)
    spin.setFocus()
    with counting(editor) as seen:
        qtbot.keyClick(spin, Qt.Key.Key_A, CTRL)
        qtbot.keyClicks(spin, number_text(editor, value))
        qtbot.keyClick(spin, Qt.Key.Key_Return)
        if not seen:  # the box showed that number already: a step away and back says it is set
            first, back = (Qt.Key.Key_Down, Qt.Key.Key_Up)
            if spin.value() <= spin.minimum():
                first, back = back, first
            qtbot.keyClick(spin, first)
            qtbot.keyClick(spin, back)
    assert seen, f"{path}: typing {value!r} into the spin box changed nothing"


def fill_json(qtbot, editor: JsonEditor, value: Any, path: str) -> None:
    type_text(qtbot, editor.edit, json.dumps(value))


def fill_nullable(qtbot, editor: NullableEditor, value: Any, path: str) -> None:
    if value is None:
        if not editor.on.isChecked():  # already null: on and off again writes the null explicitly
            click(qtbot, editor.on, path)
        click(qtbot, editor.on, path)
        return
    if not editor.on.isChecked():
        click(qtbot, editor.on, path)
    fill_editor(qtbot, editor.inner, value, path)


def fill_object(qtbot, editor: ObjectEditor, value: Any, path: str) -> None:
    assert isinstance(value, dict), f"{path}: a sub-form cannot hold {value!r}"
    unknown = set(value) - set(editor.fields)
    assert not unknown, f"{path}: the form has no fields {sorted(unknown)} (it has {sorted(editor.fields)})"
    for key, item in value.items():
        fill_editor(qtbot, editor.fields[key], item, f"{path}.{key}" if path else key)


def fill_empty(qtbot, editor: EmptyObjectEditor, value: Any, path: str) -> None:
    """A choice with nothing to set: picking it (in the union above) was the whole gesture."""
    assert value == {}, f"{path}: a choice with nothing to set cannot hold {value!r}"


def _button(parent: QWidget, kind: type[QAbstractButton], name: str, path: str) -> QAbstractButton:
    button = parent.findChild(kind, name)
    assert button is not None, f"{path}: no {name} button"
    return button


def fill_list(qtbot, editor: ListEditor, value: Any, path: str) -> None:
    """Remove the rows there are too many of, Add one row per missing item, fill every row."""
    assert isinstance(value, list), f"{path}: a list cannot hold {value!r}"
    if not value and not editor.rows:  # an explicit empty list: add a row and remove it again
        click(qtbot, _button(editor, QPushButton, "list_add", path), path)
    while len(editor.rows) > len(value):
        row, _item = editor.rows[-1]
        click(qtbot, _button(row, QToolButton, "list_remove", path), path)
    add = _button(editor, QPushButton, "list_add", path)
    while len(editor.rows) < len(value):
        before = len(editor.rows)
        click(qtbot, add, path)
        assert len(editor.rows) == before + 1, f"{path}: Add gave no new row"
    for index, item in enumerate(value):
        fill_editor(qtbot, editor.rows[index][1], item, f"{path}[{index}]")


def fill_tuple(qtbot, editor: TupleEditor, value: Any, path: str) -> None:
    assert isinstance(value, list | tuple) and len(value) == len(editor.items), (
        f"{path}: {len(editor.items)} places cannot hold {value!r}"
    )
    for index, (item_editor, item) in enumerate(zip(editor.items, value, strict=True)):
        fill_editor(qtbot, item_editor, item, f"{path}[{index}]")


def fill_mapping(qtbot, editor: MappingEditor, value: Any, path: str) -> None:
    """Remove the rows there are, then Add one row per key: type the key, fill the value."""
    assert isinstance(value, dict), f"{path}: a mapping cannot hold {value!r}"
    add = _button(editor, QPushButton, "mapping_add", path)
    if not value and not editor.rows:  # an explicit empty mapping: add a row and remove it again
        click(qtbot, add, path)
    while editor.rows:
        row = editor.rows[-1][0]
        remove = row.findChild(QToolButton)
        assert remove is not None, f"{path}: a row without a remove button"
        click(qtbot, remove, path)
    for key, item in value.items():
        click(qtbot, add, path)
        _row, key_edit, item_editor = editor.rows[-1]
        type_text(qtbot, key_edit, key)
        fill_editor(qtbot, item_editor, item, f"{path}[{key!r}]")


def variant_for(editor: UnionEditor, value: Any) -> int:
    """The variant a user would pick: one with a widget of its own for the value (a sub-form, a
    number box) before the catch-all JSON text that takes anything."""
    matching = [i for i, variant in enumerate(editor.variants) if variant.matches(value)]
    specific = [i for i in matching if not isinstance(editor.variants[i], JsonEditor)]
    return (specific or matching or [-1])[0]


def fill_union(qtbot, editor: UnionEditor, value: Any, path: str) -> None:
    index = variant_for(editor, value)
    assert index >= 0, f"{path}: no variant of {combo_items(editor.picker)} takes {value!r}"
    if editor.picker.currentIndex() != index:
        pick(qtbot, editor.picker, index, path)
    variant = editor.variants[index]
    fill_editor(qtbot, variant, value, f"{path}<{editor.picker.itemText(index)}>")


FILLERS: dict[type[Editor], Callable[[Any, Any, Any, str], None]] = {
    SecretEditor: fill_text,
    EnumEditor: fill_enum,
    BoolEditor: fill_bool,
    NumberEditor: fill_number,
    JsonEditor: fill_json,
    NullableEditor: fill_nullable,
    ObjectEditor: fill_object,
    EmptyObjectEditor: fill_empty,
    ListEditor: fill_list,
    TupleEditor: fill_tuple,
    MappingEditor: fill_mapping,
    UnionEditor: fill_union,
}


def fill_form(qtbot, form: SchemaForm | Callable[[], SchemaForm], values: dict[str, Any]) -> None:
    """Fill a form's top-level fields one by one. `form` may be a callable giving the form shown
    now (a panel that rebuilds its form re-reads it per field)."""
    for key, value in values.items():
        shown = form() if callable(form) else form
        assert isinstance(shown.editor, ObjectEditor), "the form is not a set of fields"
        editor = shown.editor.fields.get(key)
        assert editor is not None, f"no field {key!r} in the form (it has {sorted(shown.editor.fields)})"
        fill_editor(qtbot, editor, value, key)
        got = shown.value()
        assert key in got and got[key] == value, f"{key}: the form gives {got.get(key)!r}, wanted {value!r}"
