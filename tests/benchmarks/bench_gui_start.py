"""Cold start of the desktop app to its first painted window (issue 4 target: < 2.5 s).

    python tests/benchmarks/bench_gui_start.py [--runs 5] [--platform offscreen] [--verbose]

Each run is a new process doing what `aggregator gui` does (protocols registered, QApplication,
theme, LocalEngine on a fresh data directory, MainWindow shown); the clock runs from the
parent's spawn to the child's first Paint event on the main window. The child also reports where
its time went. Prints one JSON document with the median of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
marks = {}
import protocols
from engine.api import LocalEngine
protocols.register_all()
marks["engine_imports"] = time.perf_counter() - t0
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication
from ui import theme
from ui.main_window import MainWindow
marks["qt_imports"] = time.perf_counter() - t0
app = QApplication(sys.argv[:1])
theme.apply(app, "light")
engine = LocalEngine(sys.argv[1])
marks["engine_ready"] = time.perf_counter() - t0
window = MainWindow(engine)
marks["window_built"] = time.perf_counter() - t0

class FirstPaint(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint and "first_paint" not in marks:
            marks["first_paint"] = time.perf_counter() - t0
            print("PAINTED " + json.dumps(marks), flush=True)
            QTimer.singleShot(0, app.quit)
        return False

probe = FirstPaint()
window.installEventFilter(probe)
window.show()
app.exec()
window.shutdown()
engine.close()
"""


def one_run(qpa: str, verbose: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="gui-start-") as data_dir:
        env = {**os.environ, "QT_QPA_PLATFORM": qpa, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, data_dir],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=None if verbose else subprocess.DEVNULL,
            text=True,
        )
        marks = None
        for line in child.stdout:
            if line.startswith("PAINTED "):
                elapsed = time.perf_counter() - start
                marks = json.loads(line[len("PAINTED ") :])
                break
        child.wait(timeout=30)
        if marks is None:
            raise RuntimeError(f"the window never painted (exit {child.returncode}); rerun with --verbose")
        return {"first_paint_s": elapsed, "child_marks_s": {k: round(v, 3) for k, v in marks.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--platform", default=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    parser.add_argument("--verbose", action="store_true", help="show the child processes' stderr")
    args = parser.parse_args()
    one_run(
        args.platform, args.verbose
    )  # warm the OS file cache once: "cold" means a new process, not a cold disk
    runs = [one_run(args.platform, args.verbose) for _ in range(args.runs)]
    times = [r["first_paint_s"] for r in runs]
    median_index = times.index(sorted(times)[len(times) // 2])
    result = {
        "benchmark": "gui_cold_start_to_first_paint",
        "runs": args.runs,
        "qpa_platform": args.platform,
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "target_s": 2.5,
        "meets_target": statistics.median(times) < 2.5,
        "median_run_breakdown_s": runs[median_index]["child_marks_s"],
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
