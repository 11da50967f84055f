"""Editor benchmark: open a generated 200-node pipeline (plain script, prints JSON).

    QT_QPA_PLATFORM=offscreen .venv/bin/python tests/benchmarks/bench_editor_open.py [--nodes 200] [--repeat 5]

The pipeline: 20 file sources, each followed by a chain of transforms (field operations with a
validation whose `rejected` port feeds a rejects file), unioned into one sorted stream with two
destinations. Timed: from `EditorPage.open_pipeline(path)` (read and convert on the engine's
thread) to the canvas drawn and the first validation shown, painted once (the window is shown);
the first validation is timed on its own too. Median of `--repeat` opens, each into a fresh page
state (the previous document replaced). Target: < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SOURCES = 20


def generate(nodes: int) -> dict:
    """A valid graph-form pipeline of about `nodes` nodes, without a layout (the editor lays it out)."""
    out: list[dict] = []
    chain = max(1, (nodes - 4) // SOURCES - 2)  # per source: source + chain + rejects file
    tails = []
    for s in range(SOURCES):
        src = f"src_{s}"
        out.append({"id": src, "kind": "source", "connector_type": "file", "config": {"path": f"in_{s}.csv"}})
        prev = src
        for c in range(chain):
            node_id = f"t_{s}_{c}"
            if c == chain // 2:
                step = {
                    "type": "field_validation",
                    "field_name": "email",
                    "validation_type": "not_null",
                    "on_failure": "reject",
                }
                out.append({"id": node_id, "kind": "transform", "inputs": [prev], "transform": step})
                out.append(
                    {
                        "id": f"rej_{s}",
                        "kind": "destination",
                        "inputs": [f"{node_id}.rejected"],
                        "connector_type": "file",
                        "config": {"path": f"rejects_{s}.json"},
                    }
                )
            else:
                step = {"type": "field_mapping", "field_name": "email", "operation": "trim"}
                out.append({"id": node_id, "kind": "transform", "inputs": [prev], "transform": step})
            prev = node_id
        tails.append(prev)
    out.append({"id": "all", "kind": "transform", "inputs": tails, "transform": {"type": "union"}})
    prev = "all"
    for extra in range(nodes - len(out) - 3):  # pad the shared stream to exactly `nodes`
        step = {"type": "field_mapping", "field_name": "email", "operation": "lowercase"}
        out.append({"id": f"common_{extra}", "kind": "transform", "inputs": [prev], "transform": step})
        prev = f"common_{extra}"
    out.append(
        {
            "id": "by_id",
            "kind": "transform",
            "inputs": ["all"],
            "transform": {"type": "sort", "fields": ["id"]},
        }
    )
    for d in ("json", "table"):
        config = {"path": "all.json"} if d == "json" else {"table": "everything"}
        out.append(
            {
                "id": f"out_{d}",
                "kind": "destination",
                "inputs": ["by_id"],
                "connector_type": "file" if d == "json" else "duckdb",
                "config": config,
            }
        )
    return {
        "name": f"Generated {len(out)} nodes",
        "spec_version": 1,
        "nodes": out,
        "schedule": {"type": "manual"},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    import protocols

    protocols.register_all()
    from engine.api import LocalEngine
    from ui.main_window import MainWindow

    work = Path(tempfile.mkdtemp(prefix="bench_editor_"))
    spec = generate(args.nodes)
    path = work / "generated.json"
    path.write_text(json.dumps(spec))
    engine = LocalEngine(work / "data")
    window = MainWindow(engine)
    window.resize(1400, 900)
    window.show()
    page = window.show_page("editor")
    app.processEvents()

    opens, validations = [], []
    for _ in range(args.repeat):
        page.document.load({"name": "empty", "nodes": []})  # each open replaces a document
        app.processEvents()
        done = {}
        page.opened.connect(lambda _p, done=done: done.setdefault("opened", time.perf_counter()))
        page.validated.connect(lambda _i, done=done: done.setdefault("validated", time.perf_counter()))
        start = time.perf_counter()
        page.open_pipeline(path, confirm=False)
        while "opened" not in done or "validated" not in done:
            app.processEvents()
            time.sleep(0.001)
        window.repaint()  # one full paint of the drawn canvas
        end = time.perf_counter()
        page.opened.disconnect()
        page.validated.disconnect()
        opens.append(end - start)
        validations.append(done["validated"] - done["opened"])
        assert len(page.canvas._items) == len(spec["nodes"]), "not every node drawn"
        assert page.issues == [], page.issues[:3]

    result = {
        "benchmark": "editor_open",
        "nodes": len(spec["nodes"]),
        "links": sum(len(n.get("inputs", [])) for n in spec["nodes"]),
        "repeat": args.repeat,
        "open_to_painted_s": {
            "median": round(statistics.median(opens), 3),
            "all": [round(x, 3) for x in opens],
        },
        "first_validation_after_open_s": round(statistics.median(validations), 3),
        "target_s": 1.0,
        "meets_target": statistics.median(opens) < 1.0,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    window._closing_confirmed = True
    window.close()
    engine.close()


if __name__ == "__main__":
    main()
