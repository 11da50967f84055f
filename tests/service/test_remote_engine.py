"""`RemoteEngine` (engine/api/remote/): the `EngineAPI` of a real `aggregator serve` process
(tests/service/conftest.py) over its HTTP API and event stream. A run is a `Job` whose result is the
service's run record, its events come back as the typed records of engine/api/events.py, a stream's
`Job.cancel()` stops it in the service, and what goes wrong is one line of the engine's own errors."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from engine.api.connect import engine_for
from engine.api.events import RunFinished, RunStarted, StreamStats
from engine.api.protocol import EngineAPI, RunFilter
from engine.api.remote import RemoteEngine
from engine.api.remote.client import ServiceUnavailable
from engine.errors import DataError, SpecError
from engine.service import token as api_token
from tests.pipelines import csv_into_duckdb, opcua_stream
from tests.service.conftest import wait_for


@pytest.fixture
def remote(serve):
    service = serve()
    with RemoteEngine(service.url, api_token.ensure(service.data_dir)) as engine:
        yield engine, service


def test_it_is_an_engine_api_whose_run_job_ends_with_the_services_record(remote, tmp_path):
    engine, service = remote
    assert isinstance(engine, EngineAPI)
    assert engine.data_dir == service.data_dir and engine.state == "ready"

    events: list = []
    finished = threading.Event()

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, RunFinished):
            finished.set()

    unsubscribe = engine.subscribe(on_event)
    doc = csv_into_duckdb(tmp_path, 40, name="numbers", table="numbers")
    job = engine.runs.start(doc, base_dir=tmp_path)
    record = job.result(60)
    assert (record["status"], record["rows_out"]) == ("success", 40)
    assert [r["owner_pid"] for r in service.runs("numbers")] == [service.pid]  # the service ran it
    assert record["_targets"] == {"dst": "historian.duckdb:numbers"}
    assert record["nodes"]["dst"]["rows_in"] == 40
    assert finished.wait(20)
    unsubscribe()
    mine = [e for e in events if e.get("job") == job.id]
    assert [type(e) for e in mine if isinstance(e, RunStarted | RunFinished)] == [RunStarted, RunFinished]
    assert [e.run_id for e in mine if isinstance(e, RunFinished)] == [record["run_id"]]

    (listed,) = engine.runs.list(RunFilter(pipeline="numbers"))
    assert listed["run_id"] == record["run_id"]
    assert {n["node_id"]: n["rows_out"] for n in engine.runs.nodes(record["run_id"])} == {
        "src": 40,
        "dst": 40,
    }
    assert engine.runs.detail(record["run_id"])["record"]["status"] == "success"
    (stats,) = engine.health.pipeline_stats()
    assert (stats["pipeline"], stats["runs"]) == ("numbers", 1)
    assert engine.runs.jobs() == [] and engine.running_jobs() == 0

    # a document the service cannot run: the job raises the engine's own SpecError, every issue
    bad = json.loads(json.dumps(doc))
    bad["nodes"][1]["connector_type"] = "nope"
    assert engine.pipelines.validate(bad)[0]["path"] == "nodes[1].connector_type"
    with pytest.raises(SpecError) as caught:
        engine.runs.start(bad).result(60)
    assert caught.value.issues[0].path == "nodes[1].connector_type"
    with pytest.raises(DataError, match="run 'no-such-run' not found"):
        engine.runs.detail("no-such-run")


@pytest.mark.slow
def test_cancelling_a_stream_job_stops_it_in_the_service(remote):
    from tests.ui.conftest import opcua_simulator

    engine, service = remote
    committed = threading.Event()
    jobs: list[str] = []

    def on_event(event) -> None:
        if isinstance(event, StreamStats) and event.get("job") in jobs and event.rows_committed > 0:
            committed.set()

    engine.subscribe(on_event)
    with opcua_simulator(1, 2) as sim:
        job = engine.runs.start(opcua_stream(sim, name="plc stream", max_latency_ms=100))
        jobs.append(job.id)
        assert job.id in [j.id for j in engine.runs.jobs()]
        assert committed.wait(60), "the service's stream committed no rows"
        job.cancel()
        record = job.result(30)
    assert record["status"] == "cancelled"
    assert [(r["owner_pid"], r["status"]) for r in service.runs("plc stream")] == [(service.pid, "cancelled")]
    assert record["rows_out"] > 0
    wait_for(lambda: job.id not in [j.id for j in engine.runs.jobs()], what="the job to end in the service")
    assert engine.runs.stop(job.id) is False


def test_refused_token_and_unreachable_service_are_one_line_errors(serve):
    service = serve()
    with RemoteEngine(service.url, "not-the-token") as engine, pytest.raises(ServiceUnavailable) as caught:
        engine.runs.list()
    assert "refused the API token" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 2
    with RemoteEngine(service.url, "not-the-token") as engine, pytest.raises(ServiceUnavailable) as caught:
        engine.subscribe(lambda event: None)  # the event stream too, at once
    assert "refused the API token" in str(caught.value)

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with RemoteEngine(f"http://127.0.0.1:{port}", "t") as engine, pytest.raises(ServiceUnavailable) as caught:
        engine.runs.list()
    assert str(caught.value).startswith(f"http://127.0.0.1:{port}: cannot reach the service")
    assert engine.state == "stopped"


def test_engine_for_is_the_service_while_one_owns_the_data_dir(serve):
    service = serve()
    with engine_for(service.data_dir) as engine:
        assert isinstance(engine, RemoteEngine) and engine.url == service.url
    assert service.stop() == 0
    with engine_for(service.data_dir) as engine:
        assert type(engine).__name__ == "LocalEngine"
        assert engine.runs.list() == []
