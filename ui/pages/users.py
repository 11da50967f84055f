"""The Users page (admin): the service's or data directory's users, their roles and lockouts; add a
user, change a role, set a password, delete. Every call goes through `engine.users`, where the
role is checked again (a viewer who reached this page would be refused there too)."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ui.errors import one_line
from ui.pages.base import Page

ROLES = ("viewer", "editor", "admin")
COLUMNS = ("User", "Role", "Created", "Locked until")


class UserDialog(QDialog):
    """A new user: name, role, password twice (never echoed)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("UserDialog")
        self.setWindowTitle("Add user")
        form = QFormLayout(self)
        self.name = QLineEdit()
        self.name.setObjectName("UserName")
        self.role = QComboBox()
        self.role.setObjectName("UserRole")
        self.role.addItems(ROLES)
        self.password = QLineEdit()
        self.password.setObjectName("UserPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.again = QLineEdit()
        self.again.setObjectName("UserPasswordAgain")
        self.again.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Name", self.name)
        form.addRow("Role", self.role)
        form.addRow("Password", self.password)
        form.addRow("Again", self.again)
        self.error = QLabel()
        self.error.setObjectName("FieldError")
        self.error.hide()
        form.addRow(self.error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._check)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.buttons = buttons

    def _check(self) -> None:
        if self.password.text() != self.again.text():
            self.error.setText("The two passwords differ.")
            self.error.show()
            return
        self.accept()


class UsersPage(Page):
    title = "Users"

    def __init__(self, window):
        super().__init__(window)
        layout = QVBoxLayout(self)
        title = QLabel("Users")
        title.setObjectName("PageTitle")
        layout.addWidget(title)
        hint = QLabel(
            "Viewers read pipelines, runs, tags, dashboards and alerts. Editors also create, edit, run "
            "and delete pipelines and connectors. Admins also manage users, secrets and the outbox."
        )
        hint.setObjectName("FieldHint")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add user…")
        self.add_button.setObjectName("PrimaryButton")
        self.role_button = QPushButton("Change role…")
        self.password_button = QPushButton("Set password…")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setObjectName("DangerButton")
        self.refresh_button = QPushButton("Refresh")
        for button in (self.add_button, self.role_button, self.password_button, self.delete_button):
            row.addWidget(button)
        row.addStretch(1)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("UsersTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        layout.addWidget(self.table, 1)
        self.users: list[dict[str, Any]] = []
        self.add_button.clicked.connect(self.add_user)
        self.role_button.clicked.connect(self.change_role)
        self.password_button.clicked.connect(self.set_password)
        self.delete_button.clicked.connect(self.delete_user)
        self.refresh_button.clicked.connect(self.refresh)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self._selection_changed()

    def on_show(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.bridge.call(self.engine.call(self.engine.users.list), self._show, self._failed)

    def _show(self, users: list[dict[str, Any]]) -> None:
        self.users = users
        self.table.setRowCount(len(users))
        for row, user in enumerate(users):
            cells = (user["name"], user["role"], (user.get("created_at") or "")[:19].replace("T", " "),
                     (user.get("locked_until") or "")[:19].replace("T", " "))  # fmt: skip
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self._selection_changed()

    def _failed(self, exc: BaseException) -> None:
        self.toast("error", one_line(exc))

    def selected(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.users[rows[0].row()]["name"] if rows else None

    def _selection_changed(self) -> None:
        chosen = self.selected() is not None
        for button in (self.role_button, self.password_button, self.delete_button):
            button.setEnabled(chosen)

    def _done(self, text: str):
        def ok(_result: Any) -> None:
            self.toast("success", text)
            self.refresh()

        return ok

    def add_user(self) -> None:
        dialog = UserDialog(self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        name, role, password = dialog.name.text().strip(), dialog.role.currentText(), dialog.password.text()
        future = self.engine.call(self.engine.users.add, name, role, password)
        self.bridge.call(future, self._done(f"User '{name}' added as {role}"), self._failed)

    def change_role(self) -> None:
        name = self.selected()
        if name is None:
            return
        current = next(u["role"] for u in self.users if u["name"] == name)
        role, ok = QInputDialog.getItem(
            self, "Change role", f"Role of {name}:", ROLES, ROLES.index(current), False
        )
        if ok and role != current:
            future = self.engine.call(self.engine.users.set_role, name, role)
            self.bridge.call(future, self._done(f"{name} is now {role}"), self._failed)

    def set_password(self) -> None:
        name = self.selected()
        if name is None:
            return
        password, ok = QInputDialog.getText(
            self, "Set password", f"New password of {name}:", QLineEdit.EchoMode.Password
        )
        if ok and password:
            future = self.engine.call(self.engine.users.set_password, name, password)
            self.bridge.call(future, self._done(f"Password of {name} changed"), self._failed)

    def delete_user(self) -> None:
        name = self.selected()
        if name is None or not self.confirm(
            "Delete user", f"Delete the user {name}? Their logins end at once."
        ):
            return
        future = self.engine.call(self.engine.users.delete, name)
        self.bridge.call(future, self._done(f"User {name} deleted"), self._failed)
