"""Live view benchmark (issue 4 performance): prints one JSON document.

Legs, on the real main window's Live page, offscreen (QT_QPA_PLATFORM=offscreen unless set):

- fps: 20 curves (4 charts of 5 tags) of 10,000 points each, all inside the 1-minute window, so
  200,000 visible points. A frame = new points appended to the ring buffer for every tag, the
  page's chart refresh (`refresh_charts`: ring-buffer reads, setData, quality shading), and a
  synchronous repaint of every chart. Frames per second over `--seconds`. Target >= 30.
- event_loop: a 20,000-changes/s stream (1,000 tags at 20 Hz, 1,000-row batches every 50 ms)
  written as the `historian` destination writes (DuckDB insert, then the ring buffer) by a feeder
  thread, with `stream_stats` events for the throughput chart, while the page runs on its own
  timers (tag browser of 1,000 tags twice a second, 20 charted tags five times a second).
  At the same time a 10 M-row batch run (`--batch-rows`; bench_batch.py's CSV -> 5 transforms
  -> Parquet pipeline through `engine.runs.start`) runs on the engine's workers; the leg lasts until it
  ends (at least `--stream-seconds`). `ui.probe.EventLoopProbe` (a 10 ms timer) records the gaps
  in the Qt loop. Target: never blocked > 50 ms. The page's handlers report their longest call
  and that call's own CPU time (`*_cpu`: the rest of it the Qt thread waited for a core or the GIL).

    .venv/bin/python tests/benchmarks/bench_live_fps.py [--seconds 5] [--stream-seconds 10]
        [--batch-rows 10000000] [--legs fps,event_loop] [--switch-interval-ms 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

CURVES, POINTS, CHARTS = 20, 10_000, 4
STREAM_TAGS, STREAM_HZ = 1_000, 20


def tag_frame(tags: list[str], ts_us, values):
    """TAG_SCHEMA rows: `ts_us` and `values` are numpy arrays of shape (len(tags), n)."""
    import numpy as np
    import polars as pl

    from engine.tags import conform

    n = ts_us.shape[1]
    return conform(
        pl.DataFrame(
            {
                "tag": np.repeat(np.asarray(tags), n),
                "timestamp": pl.Series(ts_us.ravel()).cast(pl.Datetime("us", "UTC")),
                "value": values.ravel(),
                "quality": np.where(np.arange(ts_us.size) % 997 < 5, "bad", "good"),
                "source": ["bench"] * ts_us.size,
            }
        )
    )


def make_window(data_dir: Path, capacity: int):
    from PySide6.QtWidgets import QApplication

    from engine.api import LocalEngine
    from engine.store.ring_buffer import ring_buffers
    from ui import theme
    from ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    theme.apply(app, "light")
    ring_buffers(data_dir, capacity=capacity)  # before the engine's first use: room for the points
    engine = LocalEngine(data_dir)
    window = MainWindow(engine)
    window.resize(1600, 1000)
    window.show()
    page = window.show_page("live")
    app.processEvents()
    return app, engine, window, page


def bench_fps(seconds: float) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        app, engine, window, page = make_window(Path(tmp) / "data", capacity=POINTS)
        page.shutdown()  # no timers: this loop drives the frames
        tags = [f"bench.tag{i:02d}" for i in range(CURVES)]
        now = time.time_ns() // 1000
        span_us = 45_000_000  # 10k points in the last 45 s: inside the 1-minute window throughout
        step = span_us // POINTS
        ts = now - span_us + np.arange(POINTS, dtype=np.int64) * step
        phase = np.arange(CURVES)[:, None]
        values = (
            np.sin(ts[None, :] / 2e6 + phase) * 10
            + phase * 3
            + np.random.default_rng(1).normal(0, 0.3, (CURVES, POINTS))
        )
        engine.live.buffer().append(tag_frame(tags, np.broadcast_to(ts, (CURVES, POINTS)).copy(), values))
        page.set_window("1 min")
        for c in range(CHARTS):
            chart = page.add_chart()
            page.add_tags(tags[c * CURVES // CHARTS : (c + 1) * CURVES // CHARTS], chart)
        app.processEvents()
        frames, visible_min, last_ts = 0, None, int(ts[-1])
        times = []
        cpu0 = time.process_time()
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            # New points arrive (the stream's work, on its own thread in the app: not timed)...
            t_data = time.process_time()
            # Ten points a tag a frame, up to the wall clock (ahead of it they would leave the view).
            now_us = max(time.time_ns() // 1000, last_ts + 10)
            new_ts = last_ts + (now_us - last_ts) * np.arange(1, 11, dtype=np.int64) // 10
            last_ts = int(new_ts[-1])
            fresh = np.sin(new_ts[None, :] / 2e6 + phase) * 10 + phase * 3
            engine.live.buffer().append(tag_frame(tags, np.broadcast_to(new_ts, (CURVES, 10)).copy(), fresh))
            cpu0 += time.process_time() - t_data
            # ...and the view shows them: read the ring buffers, set the curves, paint.
            t0 = time.perf_counter()
            page.refresh_charts(force=True)
            app.processEvents()  # Qt paints what changed, as in the running app
            times.append(time.perf_counter() - t0)
            frames += 1
            if frames % 5 == 1:  # a check of the set-up, outside the frame's time
                t_check = time.process_time()
                visible = sum(len(s[0]) for chart in page.charts for s in chart.visible().values())
                visible_min = visible if visible_min is None else min(visible_min, visible)
                cpu0 += time.process_time() - t_check
        cpu = time.process_time() - cpu0
        total = sum(times)
        shot = ROOT / "tests" / "artifacts" / "live_fps.png"
        shot.parent.mkdir(exist_ok=True)
        window.grab().save(str(shot))
        window._closing_confirmed = True
        window.close()
        engine.close()
        times.sort()
        return {
            "curves": CURVES,
            "charts": CHARTS,
            "points_per_curve": POINTS,
            "visible_points_min": visible_min,
            "frames": frames,
            "fps": round(frames / total, 1),
            # This process's CPU seconds per frame: what the figure would be with a core to itself
            # (the benchmark machine is shared; the wall-clock fps drops with its load).
            "fps_per_cpu_second": round(frames / cpu, 1),
            "frame_ms_median": round(times[len(times) // 2] * 1000, 2),
            "frame_ms_p95": round(times[int(len(times) * 0.95)] * 1000, 2),
            "target_fps": 30,
            "screenshot": str(shot.relative_to(ROOT)),
        }


def batch_doc(work: Path, rows: int) -> tuple[dict, float]:
    """The batch benchmark's pipeline (tests/benchmarks/bench_batch.py: CSV -> 5 transforms ->
    Parquet) over a generated CSV of `rows` orders; the seconds the CSV took to write."""
    sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
    from bench_batch import generate, spec_for

    csv = work / "orders.csv"
    took = generate(csv, rows)
    return spec_for(csv, {"connector_type": "file", "config": {"path": str(work / "out.parquet")}}), took


def bench_event_loop(seconds: float, batch_rows: int = 0) -> dict:
    import numpy as np
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    from engine.store.tag_historian import TagHistorian
    from ui.probe import EventLoopProbe

    with tempfile.TemporaryDirectory() as tmp:
        doc, generated_s = batch_doc(Path(tmp), batch_rows) if batch_rows else (None, 0.0)
        _app, engine, window, page = make_window(Path(tmp) / "data", capacity=3_600)
        tags = [f"plant.unit{i // 20:02d}.tag{i % 20:02d}" for i in range(STREAM_TAGS)]
        store = TagHistorian(engine.workspace.historian)
        stop = threading.Event()
        fed = {"rows": 0, "late": 0}

        def feed() -> None:
            engine.emit({"event": "run_started", "run_id": "bench", "pipeline": "bench stream"})
            started = time.monotonic()
            tick = 1.0 / STREAM_HZ
            next_at = started
            cur = store.cursor()
            while not stop.is_set():
                now_us = time.time_ns() // 1000
                ts = np.full((STREAM_TAGS, 1), now_us, dtype=np.int64)
                values = np.sin(now_us / 1e6 + np.arange(STREAM_TAGS))[:, None]
                batch = tag_frame(tags, ts, values)
                cur.execute("BEGIN TRANSACTION")  # as the historian sink: insert, commit, then live
                store.insert(cur, batch)
                cur.execute("COMMIT")
                engine.live.buffer().append(batch)
                fed["rows"] += batch.height
                if fed["rows"] % (STREAM_TAGS * STREAM_HZ) == 0:
                    engine.emit(
                        {
                            "event": "stream_stats",
                            "run_id": "bench",
                            "rows_committed": fed["rows"],
                            "uptime_s": time.monotonic() - started,
                        }
                    )
                next_at += tick
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    fed["late"] += 1
            cur.close()
            engine.emit({"event": "run_finished", "run_id": "bench", "status": "success"})

        slowest: dict[str, float] = {}  # the Qt-thread handlers: their longest call (ms)

        def timing(_method, _name):
            def timed(*a, **k):
                t, cpu = time.perf_counter(), time.thread_time()
                try:
                    return _method(*a, **k)
                finally:
                    ms = (time.perf_counter() - t) * 1000
                    if ms > slowest.get(_name, 0.0):
                        slowest[_name] = round(ms, 2)
                        # The Qt thread's own CPU in that call: the rest was waiting (GIL, a lock, a core).
                        slowest[f"{_name}_cpu"] = round((time.thread_time() - cpu) * 1000, 2)

            return timed

        for name in ("refresh_tags", "_got_tags", "refresh_charts"):
            setattr(page, name, timing(getattr(page, name), name))
        # The app's other Qt-thread work: the bridge's event drain and the main-thread collector.
        collector = getattr(_app, "_main_thread_collector", None)
        if collector is not None:
            collector.timer.timeout.disconnect()
            collector.timer.timeout.connect(timing(collector.check, "gc_collect"))
        import pyqtgraph as pg

        pg.GraphicsView.paintEvent = timing(pg.GraphicsView.paintEvent, "chart_paint")  # one chart's paint
        bridge = window.bridge
        bridge._wake.disconnect()
        bridge._wake.connect(timing(bridge._drain, "bridge_drain"), Qt.ConnectionType.QueuedConnection)
        # On an engine worker, as the app's stream sinks run (at the engine's priority, below the GUI's).
        feeder = engine.submit("bench stream", lambda _cancel: feed())

        def run_loop(ms: int) -> None:
            loop = QEventLoop()
            QTimer.singleShot(ms, loop.quit)
            loop.exec()

        run_loop(1500)  # tags appear in the browser
        page.set_window("1 min")
        chart = page.add_chart()
        page.add_tags(tags[:10], chart)
        page.add_tags(tags[10:20], page.add_chart())
        run_loop(500)
        probe = EventLoopProbe(interval_ms=10)
        probe.start()
        t0 = time.monotonic()
        job = engine.runs.start(doc) if doc is not None else None
        run_loop(int(seconds * 1000))
        while job is not None and not job.done() and time.monotonic() - t0 < 300:
            run_loop(200)  # the whole batch run is measured, however long it takes
        report = probe.stop()
        elapsed = time.monotonic() - t0
        batch = None
        if job is not None:
            record = job.result(1)
            batch = {
                "rows": batch_rows,
                "csv_generated_s": round(generated_s, 1),
                "status": record["status"],
                "rows_in": record["rows_in"],
                "seconds": record.get("duration_s") or round(elapsed, 1),
            }
        rows_before = fed["rows"]
        stop.set()
        feeder.result(10)
        result = {
            "seconds": round(elapsed, 1),
            "stream_tags": STREAM_TAGS,
            "stream_changes_per_s_target": STREAM_TAGS * STREAM_HZ,
            "stream_rows_fed": rows_before,
            "stream_changes_per_s_achieved": round(rows_before / (elapsed + 2.0), 0),
            "feeder_late_ticks": fed["late"],
            "browser_tags": len(page.browser.tags()),
            "charted_tags": len(page.chart_tags()),
            "throughput_pipelines": page.throughput.pipelines(),
            "batch_run": batch,
            "probe": report,
            "slowest_handler_ms": slowest,
            "target_max_blocked_ms": 50,
        }
        window._closing_confirmed = True
        window.close()
        engine.close()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="fps leg length")
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="event-loop leg length (at least)")
    parser.add_argument(
        "--batch-rows", type=int, default=10_000_000, help="batch run during the event-loop leg (0: none)"
    )
    parser.add_argument("--legs", default="fps,event_loop", help="comma-separated: fps, event_loop")
    parser.add_argument(
        "--switch-interval-ms", type=float, default=None, help="sys.setswitchinterval for the run"
    )
    args = parser.parse_args()
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    import pyqtgraph
    from PySide6 import __version__ as pyside_version

    legs = args.legs.split(",")
    fps = bench_fps(args.seconds) if "fps" in legs else None
    loop = bench_event_loop(args.stream_seconds, args.batch_rows) if "event_loop" in legs else None
    print(
        json.dumps(
            {
                "benchmark": "live view",
                "platform": platform.platform(),
                "python": platform.python_version(),
                "pyside6": pyside_version,
                "pyqtgraph": pyqtgraph.__version__,
                "qpa": os.environ.get("QT_QPA_PLATFORM"),
                "cpus": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "fps": fps,
                "event_loop": loop,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
