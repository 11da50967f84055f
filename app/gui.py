"""`aggregator gui`: the desktop app's process — settings read, protocols registered, the engine on
its own threads, the main window on the Qt thread. The engine is closed when the window is.

Which engine: with `--attach URL` the window drives the service at URL through `RemoteEngine` (the
same EngineAPI, over HTTP and its event stream). Without it, a service that owns the data directory
(`engine.service.lock.owner`) is attached to the same way, with the data directory's token, rather
than opening the stores it holds; otherwise the engine runs in this process (`LocalEngine`).

Before Qt: Qt aborts the process (exit 134, its own message) when it has no display or its xcb
platform plugin cannot load its libraries. `display_problem()` finds both out first, without importing
Qt: the environment, a connect to the X server's socket, and `ldd` on the plugin of the PySide6 in use
(the bundle's own copy inside a bundle). The result is one line naming what is missing and the
`sudo apt install ...` that brings it, and exit 1.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import AggregatorError

log = logging.getLogger(__name__)
TOKEN_ENV = "AGGREGATOR_TOKEN"  # the API token for --attach, when --token is not given
SERVICE_STARTING_WAIT_S = 10.0  # a service that holds the lock but has not said its URL yet


# The libraries Qt's xcb plugin links (ldd on PySide6 6.11's libqxcb.so) and the Debian/Ubuntu
# package of each. packaging/build_deb.sh's Depends: names the same packages.
XCB_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
}
NO_DISPLAY_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")  # they need no X/Wayland
LDD_TIMEOUT_S = 10.0


class LoginCancelled(AggregatorError):
    """The user closed the login dialog of a service with users (exit 1)."""


class DisplayUnavailable(AggregatorError):
    """The GUI cannot start here: no display, or Qt's platform libraries are missing (exit 1)."""


def xcb_plugin() -> Path | None:
    """libqxcb.so of the PySide6 this process would import (found, not imported)."""
    spec = importlib.util.find_spec("PySide6")
    roots = list(spec.submodule_search_locations or []) if spec else []
    if getattr(sys, "_MEIPASS", None):
        roots.append(str(Path(sys._MEIPASS) / "PySide6"))
    for root in roots:
        plugin = Path(root) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.exists():
            return plugin
    return None


def missing_libraries(library: Path, ldd: str = "ldd") -> list[str]:
    """The shared libraries `library` needs that the loader does not find (`ldd`: `x => not found`).
    Empty when everything is found, or when ldd is not there to ask."""
    try:
        done = subprocess.run(
            [ldd, str(library)], capture_output=True, text=True, timeout=LDD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    found = re.findall(r"^\s*(\S+)\s+=>\s+not found", done.stdout, flags=re.MULTILINE)
    return list(dict.fromkeys(found))


def install_hint(libraries: list[str]) -> str:
    packages = list(dict.fromkeys(XCB_PACKAGES.get(lib, "") for lib in libraries))
    unknown = [lib for lib in libraries if lib not in XCB_PACKAGES]
    hint = f"sudo apt install {' '.join(p for p in packages if p)}" if any(packages) else ""
    if unknown:
        hint += ("; " if hint else "") + f"and the packages that provide {', '.join(unknown)}"
    return hint


def _x_server_answers(display: str, timeout_s: float = 2.0) -> bool:
    """Whether an X server listens for DISPLAY (`:0`, `:0.0`, `host:0`): a connect to its socket."""
    match = re.fullmatch(r"(?:unix)?(?P<host>[^:/]*):(?P<number>\d+)(?:\.\d+)?", display)
    if not match:
        return True  # a form we do not parse (launchd paths...): let Qt try
    host, number = match["host"], int(match["number"])
    if host:
        try:
            socket.create_connection((host, 6000 + number), timeout=timeout_s).close()
            return True
        except OSError:
            return False
    for address in (f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}"):  # abstract, then path
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.connect(address)
                return True
            except OSError:
                continue
    return False


def display_problem(
    environ: dict[str, str] | None = None, plugin: Path | None = None, ldd: str = "ldd"
) -> str | None:
    """Why Qt could not open a window here, in one line with the fix; None when it can."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    if platform in NO_DISPLAY_PLATFORMS:
        return None
    display, wayland = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    if platform == "wayland" or (not display and wayland and platform != "xcb"):
        if wayland:
            return None  # Qt's Wayland plugin (it says itself when the compositor is not there)
        return "no Wayland display: WAYLAND_DISPLAY is not set (start the app from the desktop session)"
    if not display:
        return (
            "no display: DISPLAY and WAYLAND_DISPLAY are not set; start the app from a desktop session "
            "(or ssh -X), or run `aggregator serve` here and attach from another machine with "
            "`aggregator gui --attach URL`"
        )
    plugin = plugin or xcb_plugin()
    if plugin is not None:
        missing = missing_libraries(plugin, ldd)
        if missing:
            return (
                f"Qt's xcb platform plugin cannot load: {', '.join(missing)} not found "
                f"({plugin.name}); install: {install_hint(missing)}"
            )
    if not _x_server_answers(display):
        return f"no X server answers on DISPLAY={display} (is the X session running, or ssh -X still open?)"
    return None


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


def open_engine(
    data_dir: Path | str | None,
    attach: str | None = None,
    token: str | None = None,
    login: Callable[[str], dict | None] | None = None,
):
    """The engine the window drives: a `RemoteEngine` for `attach` or for a service owning
    `data_dir`, else a `LocalEngine` on `data_dir` as the local OS user (admin, audited with source
    gui: docs/security.md). A remote one is asked for its data directory once here, which checks
    the URL and the token before any window opens. `login(url)`: asked for the tokens of a user when
    `--attach` names a service that has users and no token was given (the GUI's login dialog)."""
    from engine.api import LocalEngine
    from engine.api.connect import service_url
    from engine.datadir import default_data_dir

    local_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    url = attach or service_url(local_dir, SERVICE_STARTING_WAIT_S)
    if url is None:
        from engine.api.auth import local_admin

        return LocalEngine(local_dir).as_principal(local_admin("gui"), owns=True)
    from engine.api.remote import RemoteEngine

    if attach and login is not None and not token and not os.environ.get(TOKEN_ENV):
        from engine.api.remote.users import has_users

        if has_users(url):
            tokens = login(url)
            if tokens is None:
                raise LoginCancelled(f"--attach {url}: the login was cancelled")
            return _checked(
                RemoteEngine(
                    url, tokens["access_token"], refresh_token=tokens.get("refresh_token"), source="gui"
                )
            )
    return _checked(
        RemoteEngine(
            url, attach_token(url, token, local_dir), data_dir=None if attach else local_dir, source="gui"
        )
    )


def _checked(engine):
    """`engine`, once it has answered with its data directory and taken the token."""
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
    problem = display_problem()
    if problem:  # before Qt is imported: Qt would abort the process with its own message
        raise DisplayUnavailable(problem)
    import protocols
    from app.settings import Settings, SettingsStore

    protocols.register_all()
    store = SettingsStore()
    settings_error = None
    try:
        settings = store.load()
    except ValueError as exc:  # a broken file must not keep the app from starting: say so, use defaults
        settings, settings_error = Settings(), str(exc)
    from PySide6.QtWidgets import QApplication

    from ui import theme as themes
    from ui.main_window import MainWindow
    from ui.widgets.login_dialog import ask_login

    app = QApplication.instance() or QApplication(sys.argv[:1])  # first: the login dialog is a window
    app.setApplicationName("Data Aggregator")
    themes.apply(app, theme or settings.theme)
    engine = open_engine(data_dir or settings.data_dir, attach, token, login=ask_login)
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
