"""A real `aggregator serve` process for the service tests: its own data directory (tmp), a free port
(`--listen 127.0.0.1:0`; the URL is read from the service's `service.json`), output in a file (no
pipe to fill), and a wait on `GET /health` answering 200. Every process a test starts is killed at
the end if the test left it running."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_for as wait_for  # the service tests import it from here

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0  # a loaded 2-core machine; the figure itself is in tests/benchmarks/bench_service.py


def cli(
    *args, timeout: float = 120, home: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`aggregator ARGS` as a subprocess (output captured); `home` sets $AGGREGATOR_HOME, `env` adds."""
    environ = {**os.environ, **({"AGGREGATOR_HOME": str(home)} if home else {}), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=environ,
    )  # fmt: skip


class ServeProcess:
    def __init__(self, proc: subprocess.Popen, data_dir: Path, out: Path):
        self.proc = proc
        self.data_dir = data_dir
        self.out_path = out
        self.url: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT_S, interval: float = 0.05) -> ServeProcess:
        import httpx

        from engine.service.lock import owner

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.output()}")
            found = owner(self.data_dir)
            if not found or not found[1]:
                return None
            try:
                if httpx.get(found[1] + "/health", timeout=2).status_code == 200:
                    self.url = found[1]
                    return True
            except httpx.HTTPError:
                return None
            return None

        wait_for(ready, timeout, interval, what="GET /health to answer 200")
        return self

    def get(self, path: str, **kwargs):
        import httpx

        return httpx.get(self.url + path, timeout=10, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait_output(self, text: str, timeout: float = 20.0) -> str:
        return wait_for(lambda: text in self.output() and self.output(), timeout, what=repr(text))

    def runs(self, pipeline: str | None = None) -> list[dict]:
        """The run records in the service's metadata store (read-only, beside the service)."""
        path = self.data_dir / "metadata.db"
        if not path.exists():
            return []
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            sql, params = "SELECT * FROM runs", ()
            if pipeline:
                sql, params = sql + " WHERE pipeline = ?", (pipeline,)
            return [dict(r) for r in con.execute(sql + " ORDER BY started_at", params)]
        except sqlite3.OperationalError:  # the table is not there yet
            return []
        finally:
            con.close()


def spawn(data_dir: Path, out: Path, *args: str, env: dict | None = None) -> ServeProcess:
    """`aggregator serve` on `data_dir` and a free port, its output in `out`; not waited on (the
    `serve` fixture below, and the service benchmarks, which time it)."""
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            cwd=ROOT,
            env=environ,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return ServeProcess(proc, data_dir, out)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A real `aggregator serve` shared by a test module, with clients carrying its token
    (tests/service/http_server.py): tests of one module seed their own pipelines by their own names."""
    from tests.service.http_server import served_api

    with served_api(tmp_path_factory.mktemp("api")) as server:
        yield server


@pytest.fixture
def serve(tmp_path):
    """start(*args, data_dir=None, env=None, wait=True) -> ServeProcess."""
    started: list[ServeProcess] = []

    def start(*args: str, data_dir: Path | None = None, env: dict | None = None, wait: bool = True):
        sp = spawn(data_dir or tmp_path / "data", tmp_path / f"serve-{len(started)}.out", *args, env=env)
        started.append(sp)
        return sp.wait_ready() if wait else sp

    yield start
    for sp in started:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait(10)
