"""What DuckDB (the version installed) does with a CHECKPOINT beside other cursors' transactions
(issue 12, docs/performance.md "Streaming ingest", round 4). Plain script, real DuckDB, prints JSON:

    .venv/bin/python tests/benchmarks/probe_duckdb_checkpoint.py

- `insert_waits`: a checkpoint of ~19 MB of WAL runs on one cursor; another cursor's INSERT into
  the same database, begun 20 ms later, ends when (seconds from the checkpoint's start)?
- `other_database`: the same, the INSERT into another ATTACHed database of the instance.
- `beside_inserting` / `beside_updating`: CHECKPOINT while another cursor's transaction is open
  that only inserted / that updated a row: done, or refused (the error)?
- `force_beside_updating`: FORCE CHECKPOINT then: seconds until it returns (the other transaction
  commits after 1 s), and whether that COMMIT succeeded.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import duckdb

COLUMNS = "timestamp TIMESTAMPTZ, tag VARCHAR, value DOUBLE, quality VARCHAR, source VARCHAR"


def insert(cur, table: str, rows: int, first: int = 0) -> None:
    cur.execute(
        f"INSERT INTO {table} SELECT make_timestamptz(({first} + range) * 10), 'meter' || (range % 100000),"
        f" random(), 'good', 'modbus' FROM range({rows})"
    )


def fresh(work: Path, name: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        str(work / f"{name}.duckdb"), config={"memory_limit": "32MB", "checkpoint_threshold": "1GB"}
    )
    con.execute(f"CREATE TABLE tags ({COLUMNS})")
    return con


def insert_beside_checkpoint(work: Path, name: str, other_database: bool) -> dict:
    con = fresh(work, name)
    if other_database:
        con.execute(f"ATTACH '{work / (name + '_b.duckdb')}' AS b")
        con.execute(f"CREATE TABLE b.tags ({COLUMNS})")
    writer, checkpointer, other = con.cursor(), con.cursor(), con.cursor()
    for i in range(8):  # 8 commits of 50,000 rows: in the WAL (fewer than 122,880 rows each)
        writer.execute("BEGIN")
        insert(writer, "tags", 50_000, i * 50_000)
        writer.execute("COMMIT")
    wal = (work / f"{name}.duckdb.wal").stat().st_size
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    def checkpoint() -> None:
        checkpointer.execute(f"CHECKPOINT {name}")
        times["checkpoint_s"] = time.perf_counter() - t0

    thread = threading.Thread(target=checkpoint)
    thread.start()
    time.sleep(0.02)  # the checkpoint is under way (it takes ~0.15 s and more)
    other.execute("BEGIN")
    insert(other, "b.tags" if other_database else "tags", 20_000)
    times["insert_ended_s"] = time.perf_counter() - t0
    other.execute("COMMIT")
    thread.join()
    con.close()
    return {"wal_mb": round(wal / 2**20, 1), **{k: round(v, 3) for k, v in times.items()}}


def checkpoint_beside(work: Path, name: str, update: bool, force: bool) -> dict:
    con = fresh(work, name)
    con.execute("CREATE TABLE side (x BIGINT)")
    con.execute("INSERT INTO side VALUES (0)")
    insert(con, "tags", 20_000)
    other, checkpointer = con.cursor(), con.cursor()
    other.execute("BEGIN")
    other.execute("UPDATE side SET x = x + 1" if update else "INSERT INTO side VALUES (1)")
    result: dict = {}
    t0 = time.perf_counter()

    def checkpoint() -> None:
        try:
            checkpointer.execute("FORCE CHECKPOINT" if force else "CHECKPOINT")
            result["done_after_s"] = round(time.perf_counter() - t0, 3)
        except duckdb.Error as exc:
            result["refused"] = str(exc).splitlines()[0][:120]

    thread = threading.Thread(target=checkpoint)
    thread.start()
    thread.join(timeout=1.0)
    try:
        other.execute("COMMIT")
        result["other_commit"] = "ok"
    except duckdb.Error as exc:
        result["other_commit"] = str(exc).splitlines()[0][:120]
    thread.join()
    con.close()
    return result


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="probe_checkpoint_"))
    print(
        json.dumps(
            {
                "duckdb": duckdb.__version__,
                "insert_waits": insert_beside_checkpoint(work, "same", other_database=False),
                "other_database": insert_beside_checkpoint(work, "attached", other_database=True),
                "beside_inserting": checkpoint_beside(work, "ins", update=False, force=False),
                "beside_updating": checkpoint_beside(work, "upd", update=True, force=False),
                "force_beside_updating": checkpoint_beside(work, "force", update=True, force=True),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
