"""The HTTP API of a real `aggregator serve` process (tests/service/conftest.py starts it): the token
that `aggregator token` prints opens it, the event stream follows a run it executes, and /metrics
serves the service's registry."""

from __future__ import annotations

import threading
import time

import httpx

from tests.pipelines import csv_into_duckdb
from tests.service.conftest import cli, wait_for
from tests.service.event_stream import RunEvents


def test_a_served_api_takes_the_printed_token_streams_a_run_and_serves_metrics(serve, tmp_path):
    service = serve()
    printed = cli("token", "--data-dir", service.data_dir, timeout=60)
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()
    assert "secrets.enc" in service.output() and token not in service.output()

    assert service.get("/health").json()["status"] == "ok"  # loopback: no token needed
    assert service.get("/pipelines").status_code == 401
    assert service.get("/pipelines", headers={"Authorization": "Bearer not-it"}).status_code == 401
    client = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    folder = tmp_path / "in"
    folder.mkdir()
    doc = csv_into_duckdb(folder, 40, name="served numbers", table="numbers")
    assert client.post("/pipelines", json=doc).status_code == 201

    stream = RunEvents(client, tag_interval=0)
    assert stream.connected.wait(20)
    started = client.post("/pipelines/served-numbers/execute")
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert stream.finished.wait(30), stream.events
    assert [e["status"] for e in stream.events if e["event"] == "run_finished" and e["run_id"] == run_id] == [
        "success"
    ]
    detail = wait_for(
        lambda: (d := client.get(f"/runs/{run_id}").json()).get("status") == "success" and d,
        what="the run recorded as success",
    )
    assert sum(n["rows_out"] for n in detail["nodes"] if n["node_id"] == "src") == 40

    # the service's own registry (engine/service/metrics.py) is what /metrics serves
    metrics = wait_for(
        lambda: (m := service.get("/metrics").text) and "served numbers" in m and m, what="the run's metrics"
    )
    assert "# TYPE" in metrics
    client.close()

    # an open event stream does not hold the service up when it is told to stop
    holder = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    opened = threading.Event()

    def hold() -> None:
        try:
            with holder.stream("GET", "/events") as stream:
                for _ in stream.iter_lines():
                    opened.set()
        except httpx.HTTPError:
            pass

    threading.Thread(target=hold, daemon=True).start()
    assert opened.wait(20)
    began = time.monotonic()
    assert service.stop() == 0, service.output()
    # uvicorn alone would wait for the client to hang up (serve gives it 5 s, then drops it)
    assert time.monotonic() - began < 4.5
    holder.close()
