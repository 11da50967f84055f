"""`RemoteEngine` (engine/api/remote/): the `EngineAPI` of a real `aggregator serve` process
(tests/service/conftest.py) over its HTTP API and event stream. A run is a `Job` whose result is the
service's run record, its events come back as the typed records of engine/api/events.py, a stream's
`Job.cancel()` stops it in the service, and what goes wrong is one line of the engine's own errors."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from engine.api.connect import engine_for
from engine.api.events import RunFinished, RunStarted, StreamStats
from engine.api.protocol import EngineAPI, RunFilter
from engine.api.remote import RemoteEngine
from engine.api.remote.client import ServiceUnavailable
from engine.errors import DataError, SecretError, SpecError
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
        # the engine in this process, through the checked view the OS user gets (admin: issue 14)
        assert type(engine.engine).__name__ == "LocalEngine" and engine.principal.role == "admin"
        assert engine.runs.list() == []


# ---- secrets, the demo and rerun (app/http/routes_admin.py) -----------------------------------------
@pytest.fixture(scope="module")
def own_service(tmp_path_factory):
    """A service with a secrets key folder of its own and no OS keyring, and a RemoteEngine on it
    (shared by the tests below: each uses names of its own)."""
    from tests.service.http_server import served_api

    with served_api(tmp_path_factory.mktemp("admin")) as api, RemoteEngine(api.url, api.token) as engine:
        yield engine, api


def test_secrets_are_set_checked_listed_and_deleted_by_name_and_never_read_back(own_service):
    engine, api = own_service
    value = "hunter22-" + "s3cr3t" * 3
    assert "db_password" not in engine.connectors.secret_names()
    with pytest.raises(SecretError, match="secret 'db_password' is not set") as missing:
        engine.connectors.check_secret("db_password")
    assert "\n" not in str(missing.value)

    assert engine.connectors.set_secret("db_password", value) == "encrypted file"  # no keyring here
    assert "db_password" in engine.connectors.secret_names()
    engine.connectors.check_secret("db_password")  # set: no error
    # stored where a local engine keeps it: the service's encrypted file, readable with its key
    from engine.secrets import SecretStore

    assert SecretStore(api.data_dir, config=api.config_dir).get("db_password") == value

    # write-only: no answer carries the value, not even the one that stored it
    answers = [
        api.client.put("/secrets/db_password", json={"value": value}),
        api.client.get("/secrets"),
        api.client.get("/secrets/db_password"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(value not in a.text for a in answers)
    assert answers[0].json() == {"name": "db_password", "stored_in": "encrypted file"}
    assert answers[2].json() == {"name": "db_password", "set": True, "error": None}
    assert api.anonymous.get("/secrets").status_code == 401
    assert api.anonymous.put("/secrets/x", json={"value": "abcdef"}).status_code == 401

    # bad input is a one-line 422 saying where
    refused = api.client.put("/secrets/db_password", json={"value": ""})
    assert refused.status_code == 422 and "body.value" in refused.json()["error"]
    assert api.client.put("/secrets/bad name", json={"value": "abcdef"}).status_code == 422

    # the API token's own secret is not the API's to change
    with pytest.raises(PermissionError, match="API token"):
        engine.connectors.set_secret("aggregator-api-token", "mine-now")
    with pytest.raises(PermissionError, match="API token"):
        engine.connectors.delete_secret("aggregator-api-token")
    assert api.client.get("/pipelines").status_code == 200  # the token still opens the service

    assert engine.connectors.delete_secret("db_password") is True
    assert engine.connectors.delete_secret("db_password") is False
    assert "db_password" not in engine.connectors.secret_names()
    with pytest.raises(SecretError):
        engine.connectors.check_secret("db_password")
    logs = api.service.output() + "".join(
        p.read_text(encoding="utf-8") for p in (api.data_dir / "logs").glob("*")
    )
    assert value not in logs


def test_the_demo_is_installed_in_the_service_and_a_run_is_run_again(own_service):
    engine, api = own_service
    demo = engine.pipelines.install_demo()
    spec_path = Path(demo["spec_path"])
    assert spec_path.is_relative_to(api.data_dir.resolve() / "demo") and spec_path.is_file()
    assert demo["document"]["name"]
    first = engine.runs.start(demo["document"], spec_path=spec_path).result(120)
    assert first["status"] in ("success", "warning") and first["rows_in"] > 0

    again = engine.runs.rerun(first["run_id"]).result(120)
    assert again["run_id"] != first["run_id"]
    assert (again["pipeline"], again["status"], again["rows_out"]) == (
        first["pipeline"],
        first["status"],
        first["rows_out"],
    )
    (recorded,) = [
        r for r in engine.runs.list(RunFilter(pipeline=first["pipeline"])) if r["run_id"] == again["run_id"]
    ]
    assert recorded["trigger"] == "rerun" and recorded["owner_pid"] == api.service.pid
    with pytest.raises(DataError, match="run 'no-such-run' not found"):
        engine.runs.rerun("no-such-run")  # at once, not in the job
