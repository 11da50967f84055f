"""Settings: the data directory, theme, time zone and default preview size, kept in the TOML settings
file (app/settings.py). The store comes from the app as `window.settings` (ui never imports app).

`Preferences.of(window)` holds the values the other pages use while the app runs: the time zone the
Runs page and the Dashboard show times in, and the preview size the editor's previews ask for. It
reads the file once in the background when first asked, and the page's Save hands it the new values,
so they take effect at once (the theme too); the data directory is used from the next start, since
the running engine keeps its own.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QCompleter,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ui.errors import one_line
from ui.pages.base import Page
from ui.preferences import DEFAULTS, FIELDS, LOCAL, Preferences, effective, settings_store
from ui.widgets.empty_state import EmptyState
from ui.widgets.loading import LoadingOverlay


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("FieldHint")
    label.setWordWrap(True)
    label.setStyleSheet("color: palette(placeholder-text);")
    return label


def _error_label() -> QLabel:
    label = QLabel()
    label.setObjectName("FieldError")
    label.setWordWrap(True)
    label.setStyleSheet("color: #d9534f;")
    label.hide()
    return label


class SettingsPage(Page):
    title = "Settings"
    icon_name = "settings"

    def __init__(self, window):
        super().__init__(window)
        self.store = settings_store(window)
        self.prefs = Preferences.of(window)
        layout = QVBoxLayout(self)
        self.pending_loads = 0
        self.saving = False
        self.available = self.store is not None
        if not self.available:
            layout.addWidget(
                EmptyState(
                    "Settings are not available in this window: it was started without a settings file.\n"
                    "Start the app with `aggregator gui` to change them.",
                    "Go to Dashboard",
                    lambda: self.main_window.show_page("dashboard"),
                )
            )
            return
        self.loaded: dict[str, Any] = dict(DEFAULTS)
        self.overridden: list[str] = []
        props = self.store.schema().get("properties", {})

        def describe(name: str) -> str:
            text = str(props.get(name, {}).get("description", ""))
            return text[:1].upper() + text[1:] + ("." if text and not text.endswith(".") else "")

        # storage
        self.data_dir = QLineEdit()
        self.data_dir.setObjectName("DataDir")
        self.data_dir.setPlaceholderText("the default folder")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self.browse_data_dir)
        folder_row = QHBoxLayout()
        folder_row.setContentsMargins(0, 0, 0, 0)
        folder_row.addWidget(self.data_dir, 1)
        folder_row.addWidget(self.browse_button)
        self.data_dir_hint = _hint("")
        storage = QGroupBox("Storage")
        storage_form = QFormLayout(storage)

        # display
        self.theme = QComboBox()
        self.theme.setObjectName("Theme")
        for name in props.get("theme", {}).get("enum", ["light", "dark"]):
            self.theme.addItem(name.capitalize(), name)
        self.time_zone = QComboBox()
        self.time_zone.setObjectName("TimeZone")
        self.time_zone.setEditable(True)
        self.time_zone.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.time_zone.addItems([LOCAL, "UTC"])
        self.time_zone.lineEdit().setPlaceholderText("Europe/Berlin")
        self.preview_rows = QSpinBox()
        self.preview_rows.setObjectName("PreviewRows")
        rows_schema = props.get("preview_rows", {})
        self.preview_rows.setRange(
            int(rows_schema.get("minimum", 1)), int(rows_schema.get("maximum", 100_000))
        )
        self.preview_rows.setSingleStep(50)
        self.preview_rows.setSuffix(" rows")
        self.preview_rows.setMinimumWidth(180)
        display = QGroupBox("Display")
        display_form = QFormLayout(display)

        self.widgets: dict[str, QWidget] = {
            "data_dir": self.data_dir,
            "theme": self.theme,
            "time_zone": self.time_zone,
            "preview_rows": self.preview_rows,
        }
        self.errors = {name: _error_label() for name in FIELDS}
        self.hints = {
            "data_dir": self.data_dir_hint,
            "theme": _hint(describe("theme")),
            "time_zone": _hint(describe("time_zone")),
            "preview_rows": _hint(describe("preview_rows") + " The editor's previews use it at once."),
        }
        titles = {name: str(props.get(name, {}).get("title") or name) for name in FIELDS}
        for form, names in ((storage_form, ("data_dir",)), (display_form, FIELDS[1:])):
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for name in names:
                cell = QWidget()
                column = QVBoxLayout(cell)
                column.setContentsMargins(0, 0, 0, 0)
                column.setSpacing(2)
                if name == "data_dir":
                    column.addLayout(folder_row)
                else:
                    column.addWidget(self.widgets[name], 0, Qt.AlignmentFlag.AlignLeft)
                column.addWidget(self.errors[name])
                column.addWidget(self.hints[name])
                form.addRow(titles[name], cell)
        self.theme.setMinimumWidth(180)
        self.time_zone.setMinimumWidth(260)

        self.data_dir.textEdited.connect(self._edited)
        self.theme.currentIndexChanged.connect(self._edited)
        self.time_zone.currentTextChanged.connect(self._edited)
        self.preview_rows.valueChanged.connect(self._edited)

        self.path = QLabel(f"Kept in {self.store.path}")
        self.path.setObjectName("SettingsPath")
        self.path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QLabel()
        self.status.setObjectName("SettingsStatus")
        self.status.setWordWrap(True)
        self.save_button = QPushButton("Save")
        self.save_button.setObjectName("PrimaryButton")
        self.save_button.clicked.connect(self.save)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.status, 1)

        self.body = QWidget()
        column = QVBoxLayout(self.body)
        column.setContentsMargins(0, 0, 0, 0)
        title = QLabel("<h2>Settings</h2>")
        column.addWidget(title)
        column.addWidget(storage)
        column.addWidget(display)
        column.addWidget(self.path)
        column.addLayout(buttons)
        column.addStretch(1)
        self.body.setMaximumWidth(820)
        layout.addWidget(self.body)
        layout.addStretch(1)
        self.overlay = LoadingOverlay(self.body, "Loading settings…")
        self.load()

    def on_show(self) -> None:
        # the file may have been edited by hand meanwhile; edits in progress are kept
        if self.available and not self.pending_loads and not self.saving and not self.has_unsaved_changes():
            self.load()

    # ---- reading -----------------------------------------------------------------------------
    def load(self) -> None:
        self.pending_loads += 1
        self.overlay.start("Loading settings…")
        store = self.store

        def work() -> tuple[dict[str, Any], tzinfo | None, list[str], list[str]]:
            from zoneinfo import available_timezones

            values, zone = effective(store.load())
            return values, zone, store.overridden(), sorted(available_timezones())

        self.bridge.call(self.engine.call(work), lambda result: self._loaded(*result), self._load_failed)

    def _load_failed(self, exc: BaseException) -> None:
        self.pending_loads -= 1
        self.overlay.stop()
        self.status.setText(f"✕ {one_line(exc)}")
        self.toast("error", f"Settings could not be read: {one_line(exc)}")

    def _loaded(self, values: dict[str, Any], zone, overridden: list[str], zones: list[str]) -> None:
        self.pending_loads -= 1
        self.overlay.stop()
        if self.time_zone.count() <= 2:
            self.time_zone.blockSignals(True)
            self.time_zone.addItems([z for z in zones if z != "UTC"])
            self.time_zone.blockSignals(False)
            completer = QCompleter(self.time_zone.model(), self.time_zone)
            completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
            completer.setFilterMode(Qt.MatchFlag.MatchContains)
            self.time_zone.setCompleter(completer)
        self.overridden = overridden
        self._show_values(values)
        self.prefs.apply(values, zone)
        self.status.setText(
            f"Set by the environment (AGGREGATOR_*), not editable here: {', '.join(overridden)}"
            if overridden
            else ""
        )

    def _show_values(self, values: dict[str, Any]) -> None:
        self.loaded = {name: values.get(name, DEFAULTS[name]) for name in FIELDS}
        for widget in self.widgets.values():
            widget.blockSignals(True)
        self.data_dir.setText(self.loaded["data_dir"] or "")
        self.theme.setCurrentIndex(max(0, self.theme.findData(self.loaded["theme"])))
        self.time_zone.setCurrentText(self.loaded["time_zone"])
        self.preview_rows.setValue(int(self.loaded["preview_rows"]))
        for widget in self.widgets.values():
            widget.blockSignals(False)
        for name in FIELDS:
            locked = name in self.overridden
            self.widgets[name].setEnabled(not locked)
            self.widgets[name].setToolTip(f"Set by AGGREGATOR_{name.upper()}" if locked else "")
        self.browse_button.setEnabled("data_dir" not in self.overridden)
        self.data_dir_hint.setText(
            "Where the metadata, the historian and your pipelines live; empty: the default folder. "
            f"A new folder is used from the next start (now: {self.engine.data_dir})."
        )
        self.clear_errors()

    # ---- editing -----------------------------------------------------------------------------
    def value(self) -> dict[str, Any]:
        """What the widgets hold, in the settings model's terms."""
        return {
            "data_dir": self.data_dir.text().strip() or None,
            "theme": self.theme.currentData(),
            "time_zone": self.time_zone.currentText().strip(),
            "preview_rows": self.preview_rows.value(),
        }

    def has_unsaved_changes(self) -> bool:
        return self.available and self.value() != self.loaded

    def _edited(self, *_args) -> None:
        if self.saving:
            return
        self.status.setText("Unsaved changes" if self.has_unsaved_changes() else "")

    def browse_data_dir(self) -> None:
        """A folder picker (Qt's own dialog: the same on every desktop, and tests can drive it)."""
        dialog = QFileDialog(self, "Data directory", self.data_dir.text() or str(self.engine.data_dir))
        dialog.setObjectName("DataDirDialog")
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.fileSelected.connect(self._folder_picked)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    def _folder_picked(self, path: str) -> None:
        if path:
            self.data_dir.setText(path)
            self._edited()

    def clear_errors(self) -> None:
        for label in self.errors.values():
            label.hide()

    # ---- saving ------------------------------------------------------------------------------
    def save(self) -> None:
        if self.saving:
            return
        changes = {k: v for k, v in self.value().items() if k not in self.overridden}
        store = self.store
        self.saving = True
        self.save_button.setEnabled(False)
        self.save_button.setText("Saving…")
        self.status.setText("Saving…")
        self.clear_errors()
        self.bridge.call(
            self.engine.call(lambda: effective(store.update(changes))),
            lambda result: self._saved(*result),
            self._failed,
        )

    def _done_saving(self) -> None:
        self.saving = False
        self.save_button.setEnabled(True)
        self.save_button.setText("Save")

    def _saved(self, values: dict[str, Any], zone) -> None:
        self._done_saving()
        old_dir = self.loaded.get("data_dir")
        self._show_values(values)
        self.status.setText(f"Saved at {datetime.now().strftime('%H:%M:%S')}")
        from ui import theme as themes

        app = QApplication.instance()
        if values.get("theme") and themes.current(app) != values["theme"]:
            themes.apply(app, values["theme"])
        self.prefs.apply(values, zone)
        if values.get("data_dir") != old_dir:
            self.toast("info", "Settings saved. The new data directory is used from the next start.")
        else:
            self.toast("success", "Settings saved")

    def _failed(self, exc: BaseException) -> None:
        self._done_saving()
        line = one_line(exc)
        field = getattr(exc, "field", None)
        if field in self.errors:
            self.errors[field].setText(getattr(exc, "message", line))
            self.errors[field].show()
            self.widgets[field].setFocus()
        self.status.setText(f"✕ Not saved: {line}")
        self.toast("error", f"Settings not saved: {line}")
