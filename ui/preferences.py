"""The settings in force while the app runs (`Preferences.of(window)`): the time zone every page
shows times in and the preview size the editor's previews ask for. They come from the app's
settings store (app/settings.py; `window.settings`, since ui never imports app), read once in the
background, and change when the Settings page saves.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

LOCAL = "local"
DEFAULTS: dict[str, Any] = {"data_dir": None, "theme": "light", "time_zone": LOCAL, "preview_rows": 200}
FIELDS = ("data_dir", "theme", "time_zone", "preview_rows")


def settings_store(window) -> Any:
    """The app's SettingsStore: `window.settings` (app/gui.py passes it to MainWindow); tests may
    also set `window.settings_store`."""
    return getattr(window, "settings", None) or getattr(window, "settings_store", None)


def resolve_zone(name: str) -> tzinfo | None:
    """The tzinfo for a settings time zone; None means the computer's own. Called on an engine
    thread: the first ZoneInfo of a name reads its file, later ones come from ZoneInfo's cache."""
    if name in ("", LOCAL):
        return None
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def effective(settings) -> tuple[dict[str, Any], tzinfo | None]:
    values = settings.model_dump()
    return values, resolve_zone(values.get("time_zone") or LOCAL)


class Preferences(QObject):
    """The settings in force for this window; `changed(values)` fires when they are loaded or saved."""

    changed = Signal(dict)

    def __init__(self, window):
        super().__init__(window)
        self.main_window = window
        self.values: dict[str, Any] = dict(DEFAULTS)
        self.zone: tzinfo | None = None
        self.loaded = False
        stack = getattr(window, "stack", None)
        if stack is not None:  # pages are created on first show: a new editor gets the preview size
            stack.widgetAdded.connect(lambda index: self._apply_to_page(stack.widget(index)))
        store = settings_store(window)
        if store is not None:
            future = window.engine.call(lambda: effective(store.load()))
            # A broken file: the app already said so at start (app/gui.py); the defaults stay.
            window.bridge.call(future, lambda result: self.apply(*result), lambda _exc: None)

    @classmethod
    def of(cls, window) -> Preferences:
        prefs = getattr(window, "_preferences", None)
        if prefs is None:
            prefs = cls(window)
            window._preferences = prefs
        return prefs

    def apply(self, values: dict[str, Any], zone: tzinfo | None) -> None:
        self.values = {**DEFAULTS, **{k: v for k, v in values.items() if k in DEFAULTS}}
        self.zone = zone
        self.loaded = True
        for page in getattr(self.main_window, "pages", {}).values():
            self._apply_to_page(page)
        self.changed.emit(dict(self.values))

    def _apply_to_page(self, page: QWidget | None) -> None:
        preview = getattr(page, "preview", None)  # the editor's PreviewPanel
        if preview is not None and hasattr(preview, "limit"):
            preview.limit = int(self.values["preview_rows"])

    # ---- times -------------------------------------------------------------------------------
    @property
    def zone_name(self) -> str:
        return "local time" if self.zone is None else str(self.values["time_zone"])

    def moment(self, ts: str | datetime | None) -> datetime | None:
        """An ISO 8601 text (the run records' UTC times) or a datetime, in the chosen zone."""
        if not ts:
            return None
        moment = ts if isinstance(ts, datetime) else datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.zone)

    def format_time(self, ts: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        moment = self.moment(ts)
        return "" if moment is None else moment.strftime(fmt)
