"""`aggregator gui` says what is missing in one line and exits 1, before Qt can abort the process
(exit 134): no display, an X server that does not answer, libraries the xcb plugin cannot load."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app import gui
from tests.conftest import REPO


def bare_env(**extra: str) -> dict[str, str]:
    """The environment of a machine with no display: no DISPLAY, WAYLAND_DISPLAY or QT_QPA_PLATFORM
    (the test command sets offscreen for the Qt tests)."""
    drop = {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def test_no_display_is_one_line_and_exit_1(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "gui", "--data-dir", str(tmp_path / "d")],
        cwd=REPO,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: no display: DISPLAY and WAYLAND_DISPLAY are not set")
    assert not (tmp_path / "d").exists()  # found out before anything was opened


@pytest.fixture(scope="module")
def linked_to_missing(tmp_path_factory) -> Path:
    """A real shared library that needs `libaggregator-test-missing.so.0`, which is not on this
    machine: built against a stub with that soname, the stub then deleted."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) to build a library with a missing dependency")
    work = tmp_path_factory.mktemp("ldd")
    (work / "stub.c").write_text("int stub_value(void) { return 1; }\n")
    (work / "plugin.c").write_text("int stub_value(void);\nint plugin_value(void) { return stub_value(); }\n")
    stub = work / "libaggregator-test-missing.so.0"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-Wl,-soname,libaggregator-test-missing.so.0", "-o", stub, work / "stub.c"],
        check=True,
        timeout=60,
    )
    plugin = work / "libqxcb.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", plugin, work / "plugin.c", stub], check=True, timeout=60)
    stub.unlink()
    return plugin


def test_ldd_names_the_library_that_is_not_found(linked_to_missing):
    assert gui.missing_libraries(linked_to_missing) == ["libaggregator-test-missing.so.0"]


def test_a_missing_library_is_one_line_naming_it(linked_to_missing):
    problem = gui.display_problem({"DISPLAY": ":0"}, plugin=linked_to_missing)
    assert problem is not None
    assert "libaggregator-test-missing.so.0 not found" in problem
    assert "the packages that provide libaggregator-test-missing.so.0" in problem


def test_the_library_is_found_once_its_folder_is_on_the_loader_path(linked_to_missing, tmp_path):
    """The same check with the library present (LD_LIBRARY_PATH, which ldd honours): nothing missing."""
    cc = shutil.which("cc") or shutil.which("gcc")
    (tmp_path / "stub.c").write_text("int stub_value(void) { return 2; }\n")
    subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-Wl,-soname,libaggregator-test-missing.so.0",
            "-o",
            tmp_path / "libaggregator-test-missing.so.0",
            tmp_path / "stub.c",
        ],
        check=True,
        timeout=60,
    )
    env = {**os.environ, "LD_LIBRARY_PATH": str(tmp_path)}
    found = subprocess.run(
        ["ldd", str(linked_to_missing)], env=env, capture_output=True, text=True, timeout=30
    )
    assert "not found" not in found.stdout
    assert str(tmp_path / "libaggregator-test-missing.so.0") in found.stdout


@pytest.mark.parametrize(
    ("libraries", "command"),
    [
        (["libxcb-cursor.so.0"], "sudo apt install libxcb-cursor0"),
        (
            ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"],
            "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1",
        ),
        (["libxkbcommon-x11.so.0", "libEGL.so.1"], "sudo apt install libxkbcommon-x11-0 libegl1"),
    ],
)
def test_install_hint_names_the_debian_packages(libraries, command):
    assert gui.install_hint(libraries) == command


def test_the_pyside6_in_use_is_probed_for_real():
    """The xcb plugin of the PySide6 installed here: whatever ldd says is missing is what the line
    names, each with its package (this machine may lack some of them: the issue's own case)."""
    plugin = gui.xcb_plugin()
    if plugin is None:
        pytest.skip("PySide6 (the gui extra) is not installed")
    missing = gui.missing_libraries(plugin)
    problem = gui.display_problem({"DISPLAY": ":0"}, plugin=plugin)
    if missing:
        assert problem is not None and all(lib in problem for lib in missing)
        assert "sudo apt install" in problem
        assert all(lib in gui.XCB_PACKAGES for lib in missing), missing
    else:
        assert problem is None or problem.startswith("no X server answers")


def test_no_x_server_on_display():
    problem = gui.display_problem({"DISPLAY": ":8765"}, plugin=Path(sys.executable))
    assert problem == "no X server answers on DISPLAY=:8765 (is the X session running, or ssh -X still open?)"


def test_an_x_server_that_answers_passes():
    """A listener on the display's socket (abstract namespace, as Xorg and Xvfb also use)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0/tmp/.X11-unix/X8766")
        server.listen(1)
        assert gui.display_problem({"DISPLAY": ":8766.0"}, plugin=Path(sys.executable)) is None


@pytest.mark.parametrize(
    "env",
    [
        {"QT_QPA_PLATFORM": "offscreen"},
        {"QT_QPA_PLATFORM": "minimal"},
        {"WAYLAND_DISPLAY": "wayland-0"},
        {"QT_QPA_PLATFORM": "wayland", "WAYLAND_DISPLAY": "wayland-0"},
    ],
)
def test_platforms_that_need_no_x_pass(env):
    assert gui.display_problem(env, plugin=Path("/nonexistent/libqxcb.so")) is None


def test_wayland_platform_without_a_compositor():
    problem = gui.display_problem({"QT_QPA_PLATFORM": "wayland"})
    assert problem is not None and problem.startswith("no Wayland display")
