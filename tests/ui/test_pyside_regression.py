"""The PySide6 6.12.0 trap (issue 4): on Python 3.11 its void-returning calls decrement `None`,
and after a few thousand calls the process aborts with "none_dealloc". pyqtgraph hits it on its
first large paint. The pin (<6.12) keeps us off it; this test proves the installed build is safe,
in a subprocess, because the failure is an abort of the whole interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import PySide6

CALLS = 100_000


def test_void_calls_do_not_exhaust_none_refcount():
    script = textwrap.dedent(
        f"""
        import sys
        from PySide6.QtGui import QPainterPath
        path = QPainterPath()
        before = sys.getrefcount(None)
        for _ in range({CALLS}):
            path.clear()
        # a leak-free build leaves None's count where it was (give or take the loop's own use)
        print(before - sys.getrefcount(None))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert abs(int(done.stdout.strip())) < 1000, done.stdout


def test_installed_pyside_is_not_the_broken_release_on_3_11():
    version = tuple(int(p) for p in PySide6.__version__.split(".")[:2])
    assert sys.version_info >= (3, 12) or version < (6, 12), (
        f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]}: 6.12 aborts with none_dealloc; "
        "pin PySide6-Essentials<6.12"
    )
