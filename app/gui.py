"""`aggregator gui`: the desktop app's process — settings read, protocols registered, the engine on
its own threads, the main window on the Qt thread. The engine is closed when the window is.

Which engine: with `--attach URL` the window drives the service at URL through `RemoteEngine` (the
same EngineAPI, over HTTP and its event stream). Without it, a service that owns the data directory
(`engine.service.lock.owner`) is attached to the same way, with the data directory's token, rather
than opening the stores it holds; otherwise the engine runs in this process (`LocalEngine`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)
TOKEN_ENV = "AGGREGATOR_TOKEN"  # the API token for --attach, when --token is not given
SERVICE_STARTING_WAIT_S = 10.0  # a service that holds the lock but has not said its URL yet


def attach_token(url: str, token: str | None, data_dir: Path) -> str:
    """The token to attach to `url` with: --token, else $AGGREGATOR_TOKEN, else the data directory's
    own when the service at `url` is the one that owns it (the same machine)."""
    from engine.errors import UsageError

    if token:
        return token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    from engine.service import token as api_token
    from engine.service.lock import owner

    found = owner(data_dir)
    if found is not None and found[1] and found[1].rstrip("/") == url.rstrip("/"):
        return api_token.ensure(data_dir)
    raise UsageError(
        f"--attach {url}: no API token (give --token T or set ${TOKEN_ENV}; on the service's machine,"
        " `aggregator token` prints it)"
    )


def open_engine(data_dir: Path | str | None, attach: str | None = None, token: str | None = None):
    """The engine the window drives: a `RemoteEngine` for `attach` or for a service owning
    `data_dir`, else a `LocalEngine` on `data_dir`. A remote one is asked for its data directory once
    here, which checks the URL and the token before any window opens."""
    from engine.api import LocalEngine
    from engine.api.connect import service_url
    from engine.datadir import default_data_dir

    local_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    url = attach or service_url(local_dir, SERVICE_STARTING_WAIT_S)
    if url is None:
        return LocalEngine(local_dir)
    from engine.api.remote import RemoteEngine

    engine = RemoteEngine(url, attach_token(url, token, local_dir), data_dir=None if attach else local_dir)
    try:
        engine.data_dir  # noqa: B018 - the service answers (/health, open on loopback)...
        engine.pipelines.list()  # ...and takes the token
    except BaseException:
        engine.close()
        raise
    return engine


def run_gui(
    data_dir: str | Path | None = None,
    spec: str | Path | None = None,
    theme: str | None = None,
    attach: str | None = None,
    token: str | None = None,
) -> int:
    import protocols
    from app.settings import Settings, SettingsStore

    protocols.register_all()
    store = SettingsStore()
    settings_error = None
    try:
        settings = store.load()
    except ValueError as exc:  # a broken file must not keep the app from starting: say so, use defaults
        settings, settings_error = Settings(), str(exc)
    engine = open_engine(data_dir or settings.data_dir, attach, token)
    from PySide6.QtWidgets import QApplication

    from ui import theme as themes
    from ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Data Aggregator")
    themes.apply(app, theme or settings.theme)
    try:
        window = MainWindow(engine, settings=store)
        window.show()
        if settings_error:
            window.toast("warning", f"Settings not read, defaults used: {settings_error}")
        if spec:
            window.open_pipeline(Path(spec))
        return app.exec()
    finally:
        engine.close()
