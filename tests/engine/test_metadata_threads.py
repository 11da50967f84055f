"""The metadata store's one connection, shared by the engine's threads: reads hold the store's
lock too. sqlite-utils runs every query inside a SAVEPOINT it then releases; a read's savepoint
nested in a write's transaction released or committed the other's, and runs failed with "no such
savepoint" / "cannot commit - no transaction is active" (100 interval pipelines a second in a
real service: tests/benchmarks/bench_service.py scheduler_real)."""

from __future__ import annotations

import threading

from engine.store.metadata import MetadataStore


def exercise(store: MetadataStore) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(w: int) -> None:
        try:
            start.wait()
            for i in range(150):
                run_id = f"r{w}-{i}"
                run = {"run_id": run_id, "pipeline": f"p{w}", "status": "running", "started_at": f"{i:04d}"}
                store.upsert_run(run)
                store.log(run_id, "info", "started")
                store.note_leftover(run_id, "file", f"/tmp/{run_id}")
                store.upsert_run({**run, "status": "success"})
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait()
            for _ in range(300):
                store.runs(limit=20)
                store.run("r0-0")
                store.unfinished_runs()
                store.pipeline_count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_reads_and_writes_from_many_threads(tmp_path):
    store = MetadataStore(tmp_path / "metadata.db")
    try:
        assert exercise(store) == []
    finally:
        store.close()
    reopened = MetadataStore(tmp_path / "metadata.db")
    try:
        runs = reopened.runs(limit=10_000)
        assert len(runs) == 600
        assert {r["status"] for r in runs} == {"success"}
    finally:
        reopened.close()
