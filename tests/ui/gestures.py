"""What a user does with the mouse and keyboard, for the GUI tests: pick from a combo's popup, type
over a field, click a button, answer the next modal dialog, type a file name into a save dialog,
click or double-click a tree row."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

LEFT = Qt.MouseButton.LeftButton
MODAL_WAIT_TRIES = 250  # 20 ms apart: five seconds


def pick(qtbot, combo: QComboBox, text: str) -> None:
    """Open the combo's popup (what a click on it does) and click the entry `text`."""
    index = combo.findText(text)
    assert index >= 0, f"{text!r} is not offered: {[combo.itemText(i) for i in range(combo.count())]}"
    combo.showPopup()
    view = combo.view()
    qtbot.waitUntil(view.isVisible, timeout=30_000)
    item = view.model().index(index, combo.modelColumn(), view.rootIndex())
    view.scrollTo(item)
    rect = view.visualRect(item).intersected(view.viewport().rect())  # a popup squeezed at the screen edge
    qtbot.mouseClick(view.viewport(), LEFT, pos=rect.center())
    qtbot.waitUntil(lambda: not view.isVisible(), timeout=30_000)
    assert combo.currentText() == text


def type_over(qtbot, widget: QLineEdit | QAbstractSpinBox, text: str) -> None:
    """Select what the field holds and type `text` over it (Enter commits a spin box)."""
    widget.setFocus()
    qtbot.keyClick(widget, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(widget, text)
    if isinstance(widget, QAbstractSpinBox):
        qtbot.keyClick(widget, Qt.Key.Key_Return)
    if isinstance(widget, QSpinBox | QDoubleSpinBox):
        assert widget.value() == type(widget.value())(text), (widget.value(), text)
    elif isinstance(widget, QLineEdit) and widget.validator() is None and not widget.inputMask():
        assert widget.text() == text, (widget.text(), text)


def click(qtbot, button: QPushButton) -> None:
    assert button.isVisible() and button.isEnabled(), f"{button.text()} cannot be clicked"
    qtbot.mouseClick(button, LEFT)


def in_next_modal(act) -> None:
    """Run `act(dialog)` on the next modal dialog once it is up (exec() blocks the test until then)."""
    tries = [0]

    def attempt() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None or not dialog.isVisible():
            tries[0] += 1
            if tries[0] < MODAL_WAIT_TRIES:
                QTimer.singleShot(20, attempt)
            return
        act(dialog)

    QTimer.singleShot(0, attempt)


def click_in_modal(button_name: str) -> None:
    """Click the button named `button_name` of the next modal dialog."""
    in_next_modal(lambda dialog: dialog.findChild(QPushButton, button_name).click())


def save_as(name: str) -> None:
    """In the next file dialog, type `name` over the suggested file name and press Enter, as a user
    does (a dialog still open after 5 s is cancelled, so a failing test does not hang)."""

    def type_name(dialog) -> None:
        # The dialog is the timer's context: once it is deleted, the timer is dropped with it.
        QTimer.singleShot(5_000, dialog, lambda: dialog.isVisible() and dialog.reject())
        assert isinstance(dialog, QFileDialog)
        edit = dialog.findChild(QLineEdit, "fileNameEdit")
        edit.selectAll()
        QTest.keyClicks(edit, name)
        QTest.keyClick(edit, Qt.Key.Key_Return)

    in_next_modal(type_name)


def click_item(qtbot, tree, item, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """Click a tree row on its name (a row's rectangle spans every column, wider than the view)."""
    tree.scrollToItem(item)
    rect = tree.visualItemRect(item)
    qtbot.mouseClick(tree.viewport(), LEFT, modifier, QPoint(rect.left() + 20, rect.center().y()))


def double_click(qtbot, tree, item) -> None:
    tree.scrollToItem(item)
    rect = tree.visualItemRect(item)
    center = QPoint(rect.left() + 20, rect.center().y())
    # QTest's double-click alone is not seen as one by item views: press/release first, as a mouse does.
    qtbot.mouseClick(tree.viewport(), LEFT, pos=center)
    qtbot.mouseDClick(tree.viewport(), LEFT, pos=center)
