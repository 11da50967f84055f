"""Confirmation for destructive actions and for leaving unsaved changes."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget


def confirm_box(parent: QWidget | None, title: str, text: str, destructive: bool = True) -> QMessageBox:
    """The dialog itself (tests drive it: find it and click its buttons)."""
    box = QMessageBox(parent)
    box.setObjectName("ConfirmDialog")
    box.setWindowTitle(title)
    box.setText(text)
    box.setIcon(QMessageBox.Icon.Warning if destructive else QMessageBox.Icon.Question)
    ok = box.addButton("Delete" if destructive else "OK", QMessageBox.ButtonRole.AcceptRole)
    ok.setObjectName("ConfirmAccept")
    cancel = box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
    cancel.setObjectName("ConfirmReject")
    box.setDefaultButton(cancel)  # Enter must not destroy anything by accident
    box.setEscapeButton(cancel)
    return box


def confirm(
    parent: QWidget | None,
    title: str,
    text: str,
    destructive: bool = True,
    accept_text: str | None = None,
) -> bool:
    """Modal yes/no; True when the user accepted."""
    box = confirm_box(parent, title, text, destructive)
    accept = box.findChild(QWidget, "ConfirmAccept")
    if accept_text and accept is not None:
        accept.setText(accept_text)
    box.exec()
    return box.clickedButton() is accept
