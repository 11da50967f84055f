"""The main window: a sidebar switching pages, a status bar (engine state, running jobs, the user
and role), toasts, confirmation before destructive actions and before closing with unsaved changes.

Roles (issue 14): the window asks the engine who it acts for (`engine.users.me()`: the local OS user
as admin in process, the logged-in user when attached to a service). A page the role may not open
shows an "access denied" screen; buttons that would call an operation the role may not call are
disabled, with a tooltip saying which role they need. The engine checks every call again: the
window only shows what the role allows, it is not what enforces it.

Pages are imported from fixed module paths when first shown (a quicker start; other pages'
imports, such as NodeGraphQt or pyqtgraph, are paid when needed). A page whose module is missing
or fails to import shows an EmptyState naming the error instead of taking the window down.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ui.bridge import EngineBridge
from ui.widgets.dialogs import confirm
from ui.widgets.empty_state import EmptyState
from ui.widgets.toast import ToastManager

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PageEntry:
    name: str
    title: str
    glyph: str
    module: str
    cls: str


PAGES = (
    PageEntry("dashboard", "Dashboard", "▦", "ui.pages.dashboard", "DashboardPage"),
    PageEntry("pipelines", "Pipelines", "☰", "ui.pages.pipelines", "PipelinesPage"),
    PageEntry("editor", "Editor", "✎", "ui.editor.page", "EditorPage"),
    PageEntry("live", "Live", "∿", "ui.pages.live", "LivePage"),
    PageEntry("runs", "Runs", "▶", "ui.pages.runs", "RunsPage"),
    PageEntry("connectors", "Connectors", "⇄", "ui.pages.connectors", "ConnectorsPage"),
    PageEntry("data", "Data", "▤", "ui.pages.data", "DataPage"),
    PageEntry("outbox", "Store & forward", "⇅", "ui.pages.outbox", "OutboxPage"),
    PageEntry("settings", "Settings", "⚙", "ui.pages.settings", "SettingsPage"),
    PageEntry("users", "Users", "☺", "ui.pages.users", "UsersPage"),  # after Settings: Ctrl+1..9 stay
    PageEntry("audit", "Audit", "⚖", "ui.pages.audit", "AuditPage"),
)
PAGE_NAMES = tuple(p.name for p in PAGES)
SPINNER = "◐◓◑◒"
# The operation whose rule decides whether a role may open a page (engine/auth/permissions.py).
PAGE_OPERATIONS = {"users": "users.list", "audit": "audit.list"}
# Buttons and toolbar actions of the pages (attribute names, or object names of buttons with "#")
# and the operation each calls.
GATED_CONTROLS = {
    "editor": {
        "save_action": "pipelines.save",
        "save_as_action": "pipelines.save",
        "run_action": "runs.start",
    },
    "pipelines": {
        "new_button": "pipelines.save",
        "run_button": "runs.start",
        "delete_button": "pipelines.delete",
    },
    "connectors": {
        "#new_connector": "connectors.save",
        "save_button": "connectors.save",
        "delete_button": "connectors.delete",
        "test_button": "connectors.test",
        "browse_button": "connectors.browse_opcua",
    },
    "runs": {"rerun_button": "runs.rerun"},
    "outbox": {"retry_button": "outbox.quarantine_retry", "delete_button": "outbox.quarantine_delete"},
    "users": {
        "add_button": "users.add",
        "role_button": "users.set_role",
        "password_button": "users.set_password",
        "delete_button": "users.delete",
    },
}


WARM_UP_DELAY_MS = 300


class MainWindow(QMainWindow):
    def __init__(self, engine, parent: QWidget | None = None, settings=None):
        super().__init__(parent)
        from PySide6.QtWidgets import QApplication

        from ui import gc_guard

        gc_guard.install(QApplication.instance())  # Qt objects die on the GUI thread only
        self.engine = engine
        # The settings store (app.settings.SettingsStore) when the app gave one: ui cannot import
        # app, so the Settings page reaches it here. None in tests that do not need it.
        self.settings = settings
        self.bridge = EngineBridge(engine, self)
        if hasattr(engine, "set_source"):  # a service's audit trail says these calls came from the GUI
            engine.set_source("gui")
        # A RemoteEngine (aggregator gui --attach) has the service's URL; its state is an HTTP read.
        self.attached_url: str | None = getattr(engine, "url", None)
        self._remote_state = "connecting"
        self._state_busy = False
        title = "Data Aggregator"
        self.setWindowTitle(f"{title} — attached to {self.attached_url}" if self.attached_url else title)
        self.resize(1280, 800)
        self.pages: dict[str, QWidget] = {}  # created pages (a Page, or an EmptyState on failure)
        self.page_errors: dict[str, str] = {}
        self.running_jobs: set[str] = set()
        self._closing_confirmed = False
        self._shut_down = False
        self.principal: dict | None = None  # {user, role, source, client}: asked of the engine
        self.denied_pages: dict[str, QWidget] = {}

        central = QWidget()
        central.setObjectName("PageHost")
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self._build_sidebar())
        self.stack = QStackedWidget()
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.toasts = ToastManager(central)
        self._build_status_bar()
        for i, entry in enumerate(PAGES[:9], start=1):
            shortcut = QShortcut(QKeySequence(f"Ctrl+{i}"), self)
            shortcut.setContext(Qt.ShortcutContext.ApplicationShortcut)
            shortcut.activated.connect(lambda name=entry.name: self.show_page(name))
        self.bridge.event.connect(self._on_event)
        self._ask_principal()
        self.show_page("dashboard")
        # Once the window is up, the engine imports what a first preview or run needs, so that
        # the user's first run does not hold the GIL (and this thread) while it compiles them.
        QTimer.singleShot(WARM_UP_DELAY_MS, self, self._warm_up_engine)

    def _warm_up_engine(self) -> None:
        if not self._shut_down and hasattr(self.engine, "warm_up"):
            self.engine.warm_up()

    # ---- layout ----------------------------------------------------------------------------
    def _build_sidebar(self) -> QWidget:
        box = QWidget()
        box.setFixedWidth(190)
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        title = QLabel("Data Aggregator")
        title.setObjectName("AppTitle")
        column.addWidget(title)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("Sidebar")
        for i, entry in enumerate(PAGES, start=1):
            item = QListWidgetItem(f"{entry.glyph}   {entry.title}")
            item.setData(Qt.ItemDataRole.UserRole, entry.name)
            item.setToolTip(f"{entry.title} (Ctrl+{i})" if i <= 9 else entry.title)
            self.sidebar.addItem(item)
        self.sidebar.currentRowChanged.connect(lambda row: self.show_page(PAGES[row].name))
        column.addWidget(self.sidebar, 1)
        return box

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.engine_label = QLabel()
        self.engine_label.setObjectName("EngineState")
        bar.addWidget(self.engine_label)
        self.user_label = QLabel("…")
        self.user_label.setObjectName("UserRole")
        self.user_label.setToolTip("The user this window acts as, and the role")
        bar.addPermanentWidget(self.user_label)
        self.jobs_label = QLabel()
        self.jobs_label.setObjectName("JobsIndicator")
        bar.addPermanentWidget(self.jobs_label)
        from ui.widgets.alerts import AlertsBadge  # open alerts: a badge, a click lists them

        self.alerts_badge = AlertsBadge(self)
        bar.addPermanentWidget(self.alerts_badge)
        self._spin = 0
        self._spinner = QTimer(self)
        self._spinner.setInterval(150)
        self._spinner.timeout.connect(self._update_jobs)
        # The state is an attribute of the engine object (no I/O): polling it is free.
        self._state_timer = QTimer(self)
        self._state_timer.setInterval(1000)
        self._state_timer.timeout.connect(self._update_engine_state)
        self._state_timer.start()
        self._update_engine_state()
        self._update_jobs()

    def _update_engine_state(self) -> None:
        if self.attached_url:
            self._poll_remote_state()
        self._show_engine_state()

    def _show_engine_state(self) -> None:
        if self.attached_url:
            state = self._remote_state
            self.engine_label.setText(f"Attached to {self.attached_url}  ·  service: {state}")
        else:
            state = getattr(self.engine, "state", "unknown")
            self.engine_label.setText(f"Engine: {state}  ·  {self.engine.data_dir}")
        if self.engine_label.property("state") != state:
            self.engine_label.setProperty("state", state)
            self.engine_label.style().unpolish(self.engine_label)
            self.engine_label.style().polish(self.engine_label)

    def _poll_remote_state(self) -> None:
        """Ask the service for its state off this thread; the label shows the last answer."""
        if self._state_busy or self._shut_down:
            return
        self._state_busy = True

        def got(state) -> None:
            self._state_busy = False
            if state != self._remote_state:
                self._remote_state = str(state)
                self._show_engine_state()

        def failed(exc: BaseException) -> None:
            self._state_busy = False
            self._remote_state = "unreachable"
            self._show_engine_state()

        self.bridge.call(self.engine.call(lambda: self.engine.state), got, failed)

    def _update_jobs(self) -> None:
        count = len(self.running_jobs)
        if count:
            self._spin = (self._spin + 1) % len(SPINNER)
            noun = "job" if count == 1 else "jobs"
            self.jobs_label.setText(f"{SPINNER[self._spin]} {count} {noun} running")
            if not self._spinner.isActive():
                self._spinner.start()
        else:
            self.jobs_label.setText("No jobs running")
            self._spinner.stop()

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "job_started":
            self.running_jobs.add(event.get("job"))
            self._update_jobs()
        elif kind == "job_finished":
            self.running_jobs.discard(event.get("job"))
            self._update_jobs()
        elif kind == "engine_state":
            self._update_engine_state()

    # ---- who is using the window ---------------------------------------------------------------
    @property
    def role(self) -> str:
        """The role of the window's user; viewer (the least) until the engine has said."""
        return (self.principal or {}).get("role") or "viewer"

    def may(self, operation: str) -> bool:
        from engine.api.auth import ROLES, required_role

        need = required_role(operation)
        return need is None or ROLES.index(self.role) >= ROLES.index(need)

    def _needs(self, operation: str) -> str:
        from engine.api.auth import required_role

        who = (self.principal or {}).get("user") or "you"
        return f"Needs the {required_role(operation)} role: {who} is {self.role}"

    def _ask_principal(self) -> None:
        """Who the engine acts for: at once in process (no I/O), off this thread from a service."""
        users = getattr(self.engine, "users", None)
        if users is None:  # an engine without users: the process's own, as admin
            self._set_principal({"user": "local", "role": "admin", "source": "gui", "client": None})
        elif not self.attached_url:
            self._set_principal(users.me())
        else:
            self.bridge.call(
                self.engine.call(users.me),
                self._set_principal,
                lambda exc: self.user_label.setText("user unknown"),
            )

    def _set_principal(self, principal: dict) -> None:
        self.principal = principal
        self.user_label.setText(f"{principal.get('user')} · {principal.get('role')}")
        self.user_label.setMinimumWidth(self.user_label.sizeHint().width())  # never squeezed
        for name, page in self.pages.items():
            self._gate_controls(name, page)
        if self.stack.count():
            self.show_page(self.current_page_name())  # a page opened before the role was known

    def _gate_controls(self, name: str, page: QWidget) -> None:
        """Disable (with a tooltip saying why) the page's buttons whose operation the role may not
        call; they stay disabled when the page enables them again (a selection)."""
        for key, operation in GATED_CONTROLS.get(name, {}).items():
            from PySide6.QtWidgets import QPushButton

            button = page.findChild(QPushButton, key[1:]) if key.startswith("#") else getattr(page, key, None)
            if button is None:
                continue
            if self.may(operation):
                if button.property("gatedBy"):
                    del button.setEnabled  # the page's own enabling again
                    button.setProperty("gatedBy", None)
                    button.setToolTip("")
                    button.setEnabled(True)
                continue
            button.setProperty("gatedBy", operation)
            button.setToolTip(self._needs(operation))
            type(button).setEnabled(button, False)
            button.setEnabled = lambda _on, b=button: type(b).setEnabled(b, False)  # type: ignore[method-assign]

    def _denied_page(self, name: str) -> QWidget:
        """The "access denied" screen of a page the role may not open."""
        entry = PAGES[PAGE_NAMES.index(name)]
        page = self.denied_pages.get(name)
        if page is None:
            page = EmptyState("", "Go to Dashboard", lambda: self.show_page("dashboard"))
            page.setObjectName(f"denied_{name}")
            self.denied_pages[name] = page
            self.stack.addWidget(page)
        page.set_text(
            f"Access denied\n\nThe {entry.title} page needs the "
            f"{self._needs(PAGE_OPERATIONS[name]).removeprefix('Needs the ')}."
        )
        return page

    # ---- pages -----------------------------------------------------------------------------
    def _create_page(self, entry: PageEntry) -> QWidget:
        try:
            module = importlib.import_module(entry.module)
            page = getattr(module, entry.cls)(self)
        except Exception as exc:  # other helpers' pages may be missing or broken mid-edit
            error = f"{type(exc).__name__}: {exc}"
            log.error(
                "page %s (%s.%s) unavailable: %s\n%s",
                entry.name,
                entry.module,
                entry.cls,
                error,
                traceback.format_exc(),
            )
            self.page_errors[entry.name] = error
            page = EmptyState(
                f"The {entry.title} page could not be loaded.\n\n{entry.module}.{entry.cls}: {error}",
                "Go to Dashboard" if entry.name != "dashboard" else None,
                lambda: self.show_page("pipelines" if entry.name == "dashboard" else "dashboard"),
            )
        page.setObjectName(f"page_{entry.name}")
        self._gate_controls(entry.name, page)
        return page

    def page(self, name: str) -> QWidget:
        """The page widget for `name`, created on first use."""
        if name not in PAGE_NAMES:
            raise KeyError(f"page {name!r}: allowed are {', '.join(PAGE_NAMES)}")
        if name not in self.pages:
            entry = PAGES[PAGE_NAMES.index(name)]
            self.pages[name] = self._create_page(entry)
            self.stack.addWidget(self.pages[name])
        return self.pages[name]

    def _select_row(self, row: int) -> None:
        if self.sidebar.currentRow() != row:
            self.sidebar.blockSignals(True)
            self.sidebar.setCurrentRow(row)
            self.sidebar.blockSignals(False)

    def current_page_name(self) -> str:
        return PAGE_NAMES[self.sidebar.currentRow()]

    def show_page(self, name: str) -> QWidget:
        if name in PAGE_OPERATIONS and not self.may(PAGE_OPERATIONS[name]):
            denied = self._denied_page(name)
            self._select_row(PAGE_NAMES.index(name))
            self.stack.setCurrentWidget(denied)
            return denied
        page = self.page(name)
        row = PAGE_NAMES.index(name)
        if self.sidebar.currentRow() != row:
            self.sidebar.blockSignals(True)
            self.sidebar.setCurrentRow(row)
            self.sidebar.blockSignals(False)
        already = self.stack.currentWidget() is page
        self.stack.setCurrentWidget(page)
        if not already and hasattr(page, "on_show"):
            try:
                page.on_show()
            except Exception as exc:
                log.exception("page %s on_show failed", name)
                self.toast("error", f"{name} page: {type(exc).__name__}: {exc}")
        return page

    def open_pipeline(self, path: str | Path) -> None:
        """Show the editor with the spec file at `path` (the editor reads it in the background)."""
        editor = self.show_page("editor")
        opener = getattr(editor, "open_pipeline", None) or getattr(editor, "open", None)
        if opener is None:
            self.toast("error", f"The editor is not available to open {path}")
            return
        opener(Path(path))

    def new_pipeline(self) -> None:
        editor = self.show_page("editor")
        create = getattr(editor, "new_pipeline", None)
        if create is None:
            self.toast("error", "The editor is not available to create a pipeline")
            return
        create()

    # ---- feedback --------------------------------------------------------------------------
    def toast(self, kind: str, text: str, timeout_ms: int | None = None):
        return self.toasts.show(kind, text, timeout_ms)

    def confirm(
        self, title: str, text: str, destructive: bool = True, accept_text: str | None = None
    ) -> bool:
        return confirm(self, title, text, destructive, accept_text)

    # ---- closing ---------------------------------------------------------------------------
    def unsaved_pages(self) -> list[str]:
        names = []
        for name, page in self.pages.items():
            check = getattr(page, "has_unsaved_changes", None)
            try:
                if check is not None and check():
                    names.append(name)
            except Exception:
                log.exception("page %s has_unsaved_changes failed", name)
        return names

    def closeEvent(self, event: QCloseEvent) -> None:
        unsaved = self.unsaved_pages()
        if unsaved and not self._closing_confirmed:
            titles = ", ".join(PAGES[PAGE_NAMES.index(n)].title for n in unsaved)
            if not self.confirm(
                "Unsaved changes",
                f"{titles} has unsaved changes. Close and lose them?",
                destructive=True,
                accept_text="Close without saving",
            ):
                event.ignore()
                return
        self._closing_confirmed = True
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop the pages and the bridge (the engine belongs to whoever created it). Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        for name, page in self.pages.items():
            stop = getattr(page, "shutdown", None)
            if stop is not None:
                try:
                    stop()
                except Exception:
                    log.exception("page %s shutdown failed", name)
        self._spinner.stop()
        self._state_timer.stop()
        self.alerts_badge.shutdown()
        self.bridge.close()
