"""Settings page: the settings model's form (from its JSON schema), saved to the TOML file; the
theme applies at once. The store comes from the app (`window.settings_store`: ui never imports app)."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ui.pages.base import Page
from ui.widgets.empty_state import EmptyState
from ui.widgets.schema_form import SchemaForm


class SettingsPage(Page):
    title = "Settings"
    icon_name = "settings"

    def __init__(self, window):
        super().__init__(window)
        self.store = getattr(window, "settings_store", None)
        layout = QVBoxLayout(self)
        if self.store is None:
            layout.addWidget(EmptyState("Settings are not available in this window (no settings store)."))
            self.form = None
            return
        self.pending_loads = 0
        self.form = SchemaForm(self.store.schema())
        self.form.field("schema_version").setEnabled(False)  # the file's format, not a choice
        self.form.changed.connect(lambda: self.status.setText("Unsaved changes"))
        self.path = QLabel(f"Saved in {self.store.path}")
        self.status = QLabel()
        save = QPushButton("Save")
        save.setObjectName("PrimaryButton")
        save.clicked.connect(self.save)
        self.save_button = save
        buttons = QHBoxLayout()
        buttons.addWidget(save)
        buttons.addWidget(self.status, 1)
        layout.addWidget(QLabel("<h2>Settings</h2>"))
        layout.addWidget(self.form)
        layout.addWidget(self.path)
        layout.addStretch(1)
        layout.addLayout(buttons)
        self.load()

    def on_show(self) -> None:
        if self.form is not None and not self.has_unsaved_changes():
            self.load()

    def load(self) -> None:
        self.pending_loads += 1
        self.bridge.call(
            self.engine.call(self.store.load), self._loaded, lambda exc: self.toast("error", str(exc))
        )

    def _loaded(self, settings) -> None:
        self.pending_loads -= 1
        self.form.set_value(settings.model_dump(exclude_none=True))
        overridden = self.store.overridden()
        self.status.setText(f"Set by the environment: {', '.join(overridden)}" if overridden else "")

    def has_unsaved_changes(self) -> bool:
        return self.form is not None and self.status.text() == "Unsaved changes"

    def save(self) -> None:
        value = self.form.value()
        self.bridge.call(
            self.engine.call(lambda: self.store.save(value)), lambda _p: self._saved(value), self._failed
        )

    def _saved(self, value: dict) -> None:
        self.status.setText("Saved")
        self.form.clear_errors()
        theme = value.get("theme")
        if theme:
            from ui import theme as themes

            themes.apply(QApplication.instance(), theme)
        self.toast("success", "Settings saved")

    def _failed(self, exc: BaseException) -> None:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            self.form.show_errors({".".join(map(str, e["loc"])): e["msg"] for e in errors()})
        self.status.setText(f"✕ {str(exc).splitlines()[0]}")
        self.toast("error", "Settings not saved")
