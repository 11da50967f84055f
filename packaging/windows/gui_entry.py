"""aggregator-gui.exe (Windows, windowed): `aggregator gui` with no console. A windowed program has
no stderr, so the one-line error of a failed start (no display, a bad --attach...) is shown in a
message box instead."""

import io
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    if sys.stderr is None:  # windowed: collect what the CLI would print
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    from app.cli import main

    code = main(["gui", *sys.argv[1:]])
    said = sys.stderr.getvalue().strip() if isinstance(sys.stderr, io.StringIO) else ""
    if code and said and sys.platform == "win32":
        import ctypes

        ctypes.windll.user32.MessageBoxW(None, said, "Data Aggregator", 0x10)  # MB_ICONERROR
    sys.exit(code)
