"""The same rules in the desktop app, attached to a real `aggregator serve` as a user: the status
bar names the user and role; a viewer finds create/run/delete buttons disabled with a tooltip
saying why (and they stay so when the page would enable them) and an "access denied" screen for
the Users page; an admin adds a user through the Users page's dialog and finds it, with its audit
entry, on the Audit page; the login dialog says a wrong password in one line and logs in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QPushButton

from tests.service.http_server import served_api
from tests.ui.gestures import click, in_next_modal, pick, type_over
from ui.main_window import PAGE_NAMES

PASSWORD = "correct horse battery"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with served_api(tmp_path_factory.mktemp("gui-roles")) as server:
        for name, role in (("vera", "viewer"), ("ed", "editor")):
            made = server.client.post("/users", json={"name": name, "role": role, "password": PASSWORD})
            assert made.status_code == 201, made.text
        yield server


def login(api, name: str) -> str:
    answer = httpx.post(f"{api.url}/auth/login", json={"username": name, "password": PASSWORD}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


@pytest.fixture
def open_window(qtbot):
    from engine.api.remote import RemoteEngine
    from ui import theme
    from ui.main_window import MainWindow

    opened = []

    def make(url: str, token: str):
        import protocols

        protocols.register_all()
        theme.apply(QApplication.instance(), "light")
        engine = RemoteEngine(url, token)
        window = MainWindow(engine)
        window.resize(1280, 800)
        window.show()
        qtbot.waitExposed(window)
        opened.append((window, engine))
        return window

    yield make
    for window, engine in opened:
        window._closing_confirmed = True
        window.close()
        window.deleteLater()
        engine.close()


def shot(widget, name: str, docs: bool = False) -> Path:
    """A screenshot once the status bar has laid out the user's label (its text came late)."""
    from PySide6.QtTest import QTest

    label = getattr(widget, "user_label", None)
    if label is not None:
        bar = widget.statusBar()
        others = [w for w in (widget.jobs_label, widget.alerts_badge) if w.isVisible()]
        deadline = 100
        while deadline and any(label.geometry().intersects(o.geometry()) for o in others):
            bar.layout().activate()
            QTest.qWait(20)
            deadline -= 1
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert widget.grab().save(str(path))
    if docs and os.environ.get("KEEP_DOCS_SCREENSHOTS"):  # by hand, for docs/security.md
        shutil.copyfile(path, DOCS_IMAGES / name)
    return path


def test_a_viewer_sees_what_the_role_allows(qtbot, api, open_window):
    window = open_window(api.url, login(api, "vera"))
    qtbot.waitUntil(lambda: window.user_label.text() == "vera · viewer", timeout=15_000)
    pipelines = window.show_page("pipelines")
    for button in (pipelines.new_button, pipelines.run_button, pipelines.delete_button):
        assert not button.isEnabled()
        assert button.toolTip().startswith("Needs the editor role: vera is viewer")
    pipelines.delete_button.setEnabled(True)  # what the page does when a row is selected
    assert not pipelines.delete_button.isEnabled()
    shot(window, "viewer_pipelines.png")
    connectors = window.show_page("connectors")
    new = connectors.findChild(QPushButton, "new_connector")
    assert not new.isEnabled() and "editor role" in new.toolTip()
    editor = window.show_page("editor")
    for action in (editor.save_action, editor.save_as_action, editor.run_action):
        assert not action.isEnabled(), action.text()
        assert action.toolTip().startswith("Needs the editor role: vera is viewer"), action.toolTip()
    editor.run_action.setEnabled(True)  # what the editor does when a run ends
    assert not editor.run_action.isEnabled()
    window.sidebar.setCurrentRow(PAGE_NAMES.index("users"))  # a click on "Users" in the sidebar
    denied = window.stack.currentWidget()
    assert denied.objectName() == "denied_users"
    assert denied.label.text().startswith("Access denied")
    assert "needs the admin role: vera is viewer" in denied.label.text()
    shot(window, "access_denied.png", docs=True)


def test_an_admin_manages_users_and_reads_the_audit_trail(qtbot, api, open_window):
    window = open_window(api.url, api.token)  # the service's token acts as admin
    qtbot.waitUntil(lambda: window.user_label.text() == "service-token · admin", timeout=15_000)
    page = window.show_page("users")
    qtbot.waitUntil(lambda: page.table.rowCount() >= 2, timeout=15_000)
    names = {page.table.item(r, 0).text() for r in range(page.table.rowCount())}
    assert {"vera", "ed"} <= names

    def fill(dialog) -> None:
        type_over(qtbot, dialog.name, "gui_user")
        pick(qtbot, dialog.role, "editor")
        type_over(qtbot, dialog.password, PASSWORD)
        type_over(qtbot, dialog.again, PASSWORD)
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()

    in_next_modal(fill)
    click(qtbot, page.add_button)
    qtbot.waitUntil(lambda: any(u["name"] == "gui_user" for u in page.users), timeout=15_000)
    row = next(i for i, u in enumerate(page.users) if u["name"] == "gui_user")
    assert page.table.item(row, 1).text() == "editor"
    page.table.selectRow(row)
    assert page.delete_button.isEnabled()  # an admin may: nothing gated
    shot(window, "users.png", docs=True)

    audit = window.show_page("audit")
    qtbot.waitUntil(
        lambda: any(e["action"] == "users.add" and e["target"] == "gui_user" for e in audit.entries),
        timeout=15_000,
    )
    added = next(e for e in audit.entries if e["action"] == "users.add" and e["target"] == "gui_user")
    assert (added["source"], added["user"], added["outcome"]) == ("gui", "service-token", "ok")
    type_over(qtbot, audit.action_filter, "users.add")
    qtbot.keyClick(audit.action_filter, Qt.Key.Key_Return)
    qtbot.waitUntil(
        lambda: audit.entries and all(e["action"] == "users.add" for e in audit.entries), timeout=15_000
    )
    assert audit.table.rowCount() == 3  # vera and ed by the fixture, gui_user here
    click(qtbot, audit.verify_button)
    qtbot.waitUntil(lambda: audit.chain.text().startswith("Chain intact"), timeout=15_000)
    shot(window, "audit.png", docs=True)


def test_the_login_dialog(qtbot, api):
    from ui.widgets.login_dialog import LoginDialog

    dialog = LoginDialog(api.url)
    qtbot.addWidget(dialog)
    dialog.show()
    type_over(qtbot, dialog.user, "ed")
    type_over(qtbot, dialog.password, "not the password")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    qtbot.waitUntil(lambda: dialog.error.isVisible(), timeout=15_000)
    assert dialog.error.text() == "login failed: wrong user name or password"
    assert dialog.password.text() == ""  # never kept in the field
    shot(dialog, "login.png")
    type_over(qtbot, dialog.password, PASSWORD)
    with qtbot.waitSignal(dialog.accepted, timeout=15_000):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert dialog.tokens["user"] == "ed" and dialog.tokens["role"] == "editor"
