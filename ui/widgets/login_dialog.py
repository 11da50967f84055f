"""The login dialog: `aggregator gui --attach URL` asks for a user name and password when the
service has users (`GET /auth/status`), and drives the service with that user's access token.

The password field never echoes; the password is sent once to `POST /auth/login` and not kept.
A refused login (wrong password, locked account, too many attempts) is one line in the dialog,
which stays open for another try.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from ui.errors import one_line

_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="login")
    return _executor


class LoginDialog(QDialog):
    """Asks for a login to the service at `url`; `tokens` holds the service's answer once
    accepted. `login(url, user, password)` is the call that logs in (engine.api.remote.users.login)."""

    def __init__(
        self, url: str, parent: QWidget | None = None, login: Callable[..., dict[str, Any]] | None = None
    ):
        super().__init__(parent)
        self.setObjectName("LoginDialog")
        self.setWindowTitle("Log in")
        self.url = url
        self.tokens: dict[str, Any] | None = None
        if login is None:
            import functools

            from engine.api.remote.users import login as remote_login

            login = functools.partial(remote_login, source="gui")
        self._login = login
        layout = QVBoxLayout(self)
        intro = QLabel(f"The service at {url} has users: log in to use it.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.user = QLineEdit()
        self.user.setObjectName("LoginUser")
        self.password = QLineEdit()
        self.password.setObjectName("LoginPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        layout.addLayout(form)
        self.error = QLabel()
        self.error.setObjectName("FieldError")
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Log in")
        self.buttons.accepted.connect(self.try_login)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.resize(420, 0)

    def try_login(self) -> None:
        """Log in off the Qt thread (a request to the service); the dialog waits, responsive."""
        name = self.user.text().strip()
        password = self.password.text()
        if not name or not password:
            self.show_error("Give a user name and a password.")
            return
        self.password.clear()
        self.buttons.setEnabled(False)
        self.error.hide()
        self._future = _pool().submit(self._login, self.url, name, password)
        self._poll = QTimer(self)
        self._poll.setInterval(20)
        self._poll.timeout.connect(self._check_login)
        self._poll.start()

    def _check_login(self) -> None:
        if not self._future.done():
            return
        self._poll.stop()
        self.buttons.setEnabled(True)
        try:
            self.tokens = self._future.result()
        except Exception as exc:  # one line in the dialog, which stays open for another try
            self.show_error(one_line(exc))
            return
        self.accept()

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()


def ask_login(url: str, parent: QWidget | None = None) -> dict[str, Any] | None:
    """The service's answer to a login to `url` asked in the dialog ({access_token, refresh_token,
    user, role...}: give both tokens to `RemoteEngine(url, access, refresh_token=refresh)`, which
    renews the access token as it expires); None when the user cancels."""
    dialog = LoginDialog(url, parent)
    if dialog.exec() != QDialog.DialogCode.Accepted or dialog.tokens is None:
        return None
    return dialog.tokens
