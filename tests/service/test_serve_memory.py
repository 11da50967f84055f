"""`aggregator serve`'s memory (issue 10): the idle service under its RSS target, and the historian
memory setting taking effect in the service's own DuckDB connection (read back through the API)."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

TOKEN = "memory-test-token"
IDLE_TARGET_MB = 120.0  # the target for an idle service (tests/benchmarks/bench_service.py)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def sql(served, statement: str) -> pl.DataFrame:
    import httpx

    answer = httpx.post(
        served.url + "/data/sql",
        json={"sql": statement},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return pl.read_ipc_stream(io.BytesIO(answer.content))


def test_an_idle_service_stays_under_its_rss_target(serve):
    served = serve(env={"AGGREGATOR_SECRET_AGGREGATOR_API_TOKEN": TOKEN})
    # Ready (the "serving" line follows READY); then a request, so the API's path is in memory too.
    served.wait_output("serving ")
    assert served.get("/health").status_code == 200
    assert rss_mb(served.pid) < IDLE_TARGET_MB
    assert served.stop() == 0


def test_the_historian_memory_limit_setting_takes_effect_in_the_service(serve):
    served = serve(
        env={
            "AGGREGATOR_SECRET_AGGREGATOR_API_TOKEN": TOKEN,
            "AGGREGATOR_HISTORIAN_MEMORY_LIMIT": "64MB",
            "AGGREGATOR_HISTORIAN_THREADS": "1",
        }
    )
    row = sql(served, "SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t").row(0)
    assert row == ("61.0 MiB", 1)  # 64 MB = 64,000,000 bytes, as DuckDB shows it
    temp = sql(served, "SELECT current_setting('temp_directory') AS d").item()
    assert Path(temp) == served.data_dir.resolve() / "historian.duckdb.tmp"  # spills stay in the data dir
    assert served.stop() == 0
