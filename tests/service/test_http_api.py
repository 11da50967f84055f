"""The HTTP API of a real `aggregator serve` process (tests/service/http_server.py: one service for
the module, the `api` fixture), talked to over HTTP with httpx. Each test seeds what it needs through
the API (pipelines, connectors, runs) under names of its own. The tests that break or re-listen a
service start one of their own; the one that counts the engine's subscribers looks inside the
process, so it serves the app in this process (`in_process_api`)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from engine.api.events import RunFinished, RunStarted, event_from_dict
from tests.pipelines import csv_into_duckdb, ecommerce_folder
from tests.service.event_stream import RunEvents
from tests.service.http_server import served_api
from tests.waiting import wait_for

ONE_LINE = re.compile(r"^[^\n]+$")


@pytest.fixture
def csv_doc(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return csv_into_duckdb(folder, 25, name="numbers in", table="numbers")


def assert_one_line_error(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"error", "issues"}, body
    assert ONE_LINE.match(body["error"]), body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body["error"]


# ---- documentation ------------------------------------------------------------------------------
def test_docs_and_openapi_are_served_offline(api):
    spec = api.anonymous.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/pipelines",
        "/pipelines/{id}/execute",
        "/connectors/{name}/test",
        "/runs/{run_id}",
        "/events",
    ):
        assert path in paths
    docs = api.anonymous.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    urls = re.findall(r"https?://[^\s\"'<>]+", docs.text)
    outside = [u for u in urls if not re.match(r"https?://(localhost|127\.0\.0\.1|\[::1\])[:/]", u)]
    assert outside == [], outside
    # every file the page loads comes from the service itself
    for ref in re.findall(r"(?:src|href)=\"([^\"]+)\"", docs.text):
        assert ref.startswith("/"), ref
        assert api.anonymous.get(ref).status_code == 200, ref
    assert "'/openapi.json'" in docs.text or '"/openapi.json"' in docs.text


# ---- the token ----------------------------------------------------------------------------------
def test_every_route_but_health_and_metrics_needs_the_token(api):
    spec = api.client.get("/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method in operations:
            url = re.sub(r"\{[^}]+\}", "x", path)
            if path in ("/auth/login", "/auth/refresh", "/auth/status"):
                continue  # how a user gets a token: open, rate limited (tests/auth/test_http_roles.py)
            open_route = path in ("/health", "/metrics")
            for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic abc"}):
                response = api.anonymous.request(method.upper(), url, headers=headers)
                if open_route and not headers.get("Authorization", "").startswith("Bearer"):
                    assert response.status_code == 200, (method, path)
                    continue
                if open_route:  # loopback: a wrong token does not matter on an open route
                    continue
                assert_one_line_error(response, 401, "token")
                assert response.headers["www-authenticate"].startswith("Bearer")
                checked += 1
    assert checked >= 3 * 25
    assert api.client.get("/pipelines").status_code == 200


def test_health_and_metrics_are_open_to_this_machine(api):
    health = api.anonymous.get("/health").json()
    assert health["status"] == "ok" and health["data_dir"] == str(api.data_dir.resolve())
    assert health["listen_host"] == "127.0.0.1"
    assert health["version"] and health["uptime_s"] >= 0
    metrics = api.anonymous.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain") and "# TYPE" in metrics.text


def outside_address() -> str:
    """An address of this machine that is not loopback (the one its default route leaves from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # UDP: nothing is sent, the route picks the address
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback: no other machine can be played")
    return address


def test_health_and_metrics_need_the_token_from_another_machine(tmp_path):
    """A service listening on every address, called at this machine's network address: the client
    is not loopback, so even /health and /metrics (and the docs) want the token. (Plain HTTP beyond
    loopback needs --insecure: tests/security/test_tls.py.)"""
    address = outside_address()
    with served_api(tmp_path, "--listen", "0.0.0.0:0", "--insecure") as service:
        port = httpx.URL(service.url).port
        assert service.anonymous.get("/health").json()["listen_host"] == "0.0.0.0"
        with httpx.Client(base_url=f"http://{address}:{port}", timeout=30) as remote:
            for path in ("/health", "/metrics", "/docs", "/openapi.json"):
                assert_one_line_error(remote.get(path), 401)
                ok = remote.get(path, headers={"Authorization": f"Bearer {service.token}"})
                assert ok.status_code == 200, (path, ok.text)


# ---- pipelines ----------------------------------------------------------------------------------
def test_pipelines_are_created_read_replaced_and_deleted(api, csv_doc):
    created = api.client.post("/pipelines", json=csv_doc)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert pid == "numbers-in"
    assert_one_line_error(api.client.post("/pipelines", json=csv_doc), 409, "numbers-in")

    listed = {p["id"]: p for p in api.client.get("/pipelines").json()}
    assert listed[pid]["name"] == "numbers in" and not listed[pid]["read_only"]
    assert all({"id", "name"} <= set(p) for p in listed.values())
    one = api.client.get(f"/pipelines/{pid}").json()
    assert one["form"] == "graph" and [n["id"] for n in one["document"]["nodes"]] == ["src", "dst"]

    renamed = {**csv_doc, "description": "replaced"}
    assert api.client.put(f"/pipelines/{pid}", json=renamed).status_code == 200
    assert api.client.get(f"/pipelines/{pid}").json()["description"] == "replaced"

    assert api.client.delete(f"/pipelines/{pid}").status_code == 204
    assert_one_line_error(api.client.get(f"/pipelines/{pid}"), 404, pid)
    assert_one_line_error(api.client.delete("/pipelines/example:ecommerce_orders"), 403, "shipped")
    assert_one_line_error(api.client.put("/pipelines/example:ecommerce_orders", json=csv_doc), 403)


def test_a_linear_document_in_yaml_is_taken(api, tmp_path):
    folder = ecommerce_folder(tmp_path)
    linear = {
        "name": "orders copy",
        "sources": [{"name": "orders", "connector_type": "file",
                     "config": {"path": str(folder / "woocommerce_orders.csv")}}],
        "transformations": [],
        "destination": {"name": "out", "connector_type": "duckdb", "config": {"table": "orders_copy"}},
    }  # fmt: skip
    response = api.client.post(
        "/pipelines?id=orders", content=yaml.safe_dump(linear), headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 201, response.text
    got = api.client.get("/pipelines/orders").json()
    assert got["name"] == "orders copy" and got["form"] == "linear"
    assert {n["kind"] for n in got["document"]["nodes"]} == {"source", "destination"}


def test_storing_and_running_refuse_a_bad_document_in_the_same_words(api, csv_doc):
    bad = json.loads(json.dumps(csv_doc))
    bad["nodes"][1]["connector_type"] = "nowhere"
    stored, run = api.client.post("/pipelines", json=bad), api.client.post("/runs", json=bad)
    said = assert_one_line_error(stored, 422, "body: nodes[1]", "nowhere")
    assert assert_one_line_error(run, 422) == said
    assert run.json()["issues"] == stored.json()["issues"] and stored.json()["issues"]


def test_bad_documents_are_one_line_4xx_saying_where(api, csv_doc):
    bad = json.loads(json.dumps(csv_doc))
    bad["nodes"][1]["connector_type"] = "nowhere"
    error = assert_one_line_error(api.client.post("/pipelines", json=bad), 422, "nodes[1]")
    assert "nowhere" in error
    assert_one_line_error(
        api.client.post("/pipelines", content=b'{"name": "x",', headers={"Content-Type": "application/json"}),
        422,
        "body",
        "line 1",
    )
    assert_one_line_error(
        api.client.post("/pipelines", content=b"name: [x", headers={"Content-Type": "application/yaml"}),
        422,
        "YAML",
    )
    assert_one_line_error(api.client.post("/pipelines", json=[1, 2]), 422, "object")
    assert_one_line_error(
        api.client.post("/pipelines", content=b"<x/>", headers={"Content-Type": "text/xml"}), 415, "text/xml"
    )
    assert_one_line_error(api.client.get("/runs?limit=0"), 422, "query.limit")
    assert_one_line_error(api.client.get("/runs?since=yesterday"), 422, "query.since")
    assert_one_line_error(api.client.get("/pipelines/a b"), 422, "path.id")
    validated = api.client.post("/validate", json=bad).json()
    assert validated["valid"] is False and validated["issues"][0]["path"].startswith("nodes[1]")
    assert api.client.post("/validate", json=csv_doc).json() == {"valid": True, "issues": []}


# ---- runs and the event stream --------------------------------------------------------------------
def test_execute_answers_the_run_which_the_event_stream_and_runs_follow(api, csv_doc):
    pid = api.client.post("/pipelines", json=csv_doc).json()["id"]
    trend_runs = sum(t["runs"] for t in api.client.get("/analytics/pipeline-trends").json())
    stream = RunEvents(api.client, tag_interval=0)
    assert stream.connected.wait(20), "the event stream sent nothing"

    started = api.client.post(f"/pipelines/{pid}/execute")
    assert started.status_code == 202, started.text
    run_id, job_id = started.json()["run_id"], started.json()["job_id"]
    assert run_id and job_id

    assert stream.finished.wait(30), f"no run_finished on the event stream: {stream.events}"
    records = [event_from_dict(e) for e in stream.events]
    begun = [r for r in records if isinstance(r, RunStarted)]
    ended = [r for r in records if isinstance(r, RunFinished)]
    assert begun[0].run_id == run_id and begun[0].job == job_id
    assert ended[0].run_id == run_id and ended[0].status == "success"

    detail = api.wait_for(
        lambda: (d := api.client.get(f"/runs/{run_id}").json()).get("status") == "success" and d,
        what="the run to be recorded as success",
    )
    assert detail["pipeline"] == "numbers in"
    nodes = {n["node_id"]: n for n in detail["nodes"]}
    assert nodes["src"]["rows_out"] == 25 and nodes["dst"]["rows_in"] == 25
    assert detail["logs"] and detail["rejects"]["total"] == 0
    runs = api.client.get(f"/pipelines/{pid}/runs").json()
    assert [r["run_id"] for r in runs] == [run_id] and runs[0]["status"] == "success"
    assert [r["run_id"] for r in api.client.get("/runs?status=success&pipeline=numbers in").json()] == [
        run_id
    ]
    assert api.client.get("/runs?status=failed&pipeline=numbers in").json() == []
    assert_one_line_error(api.client.get("/runs?status=bogus"), 422, "query.status")
    assert_one_line_error(api.client.get("/runs/no-such-run"), 404, "no-such-run")

    stats = {s["pipeline"]: s for s in api.client.get("/monitoring/pipeline-stats").json()}
    assert stats["numbers in"]["runs"] == 1 and stats["numbers in"]["rows_out"] == 25
    top = api.client.get("/analytics/top-pipelines").json()
    assert "numbers in" in [t["pipeline"] for t in top]
    performance = api.client.get("/monitoring/pipeline-performance").json()
    assert "numbers in" in [p["pipeline"] for p in performance]
    assert sum(t["runs"] for t in api.client.get("/analytics/pipeline-trends").json()) == trend_runs + 1


def test_a_failed_run_is_an_alert_and_a_broken_file_is_a_4xx(api, csv_doc, tmp_path):
    missing = tmp_path / "missing.csv"
    csv_doc["name"] = "gone numbers"
    csv_doc["nodes"][0]["config"]["path"] = str(missing)
    assert api.client.post("/pipelines", json=csv_doc, params={"id": "gone"}).status_code == 201
    started = api.client.post("/pipelines/gone/execute")
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    api.wait_for(
        lambda: api.client.get(f"/runs/{run_id}").json().get("status") == "failed", what="the run to fail"
    )
    (alert,) = [a for a in api.client.get("/monitoring/alerts").json() if a.get("run_id") == run_id]
    assert alert["kind"] == "run_failed" and str(missing) in alert["message"]

    # a file edited on disk into something that is no pipeline: executing it is a 4xx, not a 500
    (api.data_dir / "pipelines" / "broken.json").write_text('{"name": "broken", "nodes": [{"id": 1}]}')
    assert_one_line_error(api.client.post("/pipelines/broken/execute"), 422)


# ---- connectors ---------------------------------------------------------------------------------
def test_connectors_are_saved_tested_renamed_and_deleted(api, tmp_path):
    data = tmp_path / "readings.csv"
    data.write_text("a,b\n1,2\n")
    body = {"name": "readings", "connector_type": "file", "role": "source", "config": {"path": str(data)}}
    created = api.client.post("/connectors", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "readings"
    assert_one_line_error(api.client.post("/connectors", json=body), 409, "readings")
    assert [c["name"] for c in api.client.get("/connectors").json()] == ["readings"]

    tested = api.client.post("/connectors/readings/test")
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text

    moved = {**body, "name": "moved", "config": {"path": str(tmp_path / "gone.csv")}}
    replaced = api.client.put("/connectors/readings", json=moved)
    assert replaced.status_code == 200, replaced.text
    assert_one_line_error(api.client.get("/connectors/readings"), 404, "readings")
    failed = api.client.post("/connectors/moved/test").json()
    assert failed["ok"] is False and "gone.csv" in failed["error"]

    secret = {
        **body,
        "name": "db",
        "connector_type": "file",
        "config": {"path": str(data), "password": "hunter22"},
    }
    assert_one_line_error(api.client.post("/connectors", json=secret), 422, "body.config")
    unknown = {**body, "name": "odd", "connector_type": "telepathy"}
    assert_one_line_error(api.client.post("/connectors", json=unknown), 422, "body.connector_type", "file")
    assert_one_line_error(api.client.post("/connectors", json={**body, "role": "sideways"}), 422, "body.role")

    assert api.client.delete("/connectors/moved").status_code == 204
    assert_one_line_error(api.client.delete("/connectors/moved"), 404)
    assert api.client.get("/connectors").json() == []


# ---- preview, catalog, historian -------------------------------------------------------------------
def test_preview_and_the_transformations_catalog(api, csv_doc):
    preview = api.client.post("/preview?limit=3", json=csv_doc)
    assert preview.status_code == 200, preview.text
    ports = {(p["node"], p["port"]): p for p in preview.json()["ports"]}
    src = ports[("src", "out")]
    assert src["rows"] == [{"a": 0}, {"a": 1}, {"a": 2}] and src["columns"][0]["name"] == "a"
    assert_one_line_error(api.client.post("/preview?node=nowhere", json=csv_doc), 422, "nowhere")
    catalog = api.client.get("/transformations").json()
    types = {t["type"]: t for t in catalog}
    assert "field_validation" in types and types["field_validation"]["config_schema"]["type"] == "object"


def test_timeseries_reads_the_historian(api, tmp_path):
    from datetime import UTC, datetime

    import polars as pl

    readings = tmp_path / "readings.parquet"
    minute = [datetime(2026, 1, 1, 0, m // 2, 30 * (m % 2), tzinfo=UTC) for m in range(4)]
    pl.DataFrame({"tag": ["t1"] * 4, "timestamp": minute, "value": [1.0, 3.0, 10.0, 20.0]}).write_parquet(
        readings
    )
    doc = {
        "name": "tags in",
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "file", "config": {"path": str(readings)}},
            {
                "id": "hist",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "historian",
                "config": {},
            },
        ],
    }
    pid = api.client.post("/pipelines", json=doc)
    assert pid.status_code == 201, pid.text
    run_id = api.client.post(f"/pipelines/{pid.json()['id']}/execute").json()["run_id"]
    record = api.wait_for(
        lambda: (r := api.client.get(f"/runs/{run_id}").json()).get("status") not in ("running", None) and r,
        what="the run to end",
    )
    assert record["status"] == "success", record["record"].get("error")
    query = {"tags": "t1", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:02:00Z", "bucket": "1m",
             "stats": ["avg", "count"]}  # fmt: skip
    series = api.client.get("/analytics/timeseries", params=query)
    assert series.status_code == 200, series.text
    rows = [(r["avg"], r["count"]) for r in series.json()["rows"]]
    assert rows == [(2.0, 2), (15.0, 2)]
    assert_one_line_error(
        api.client.get("/analytics/timeseries", params={**query, "bucket": "1y"}), 422, "query.bucket"
    )
    assert_one_line_error(
        api.client.get("/analytics/timeseries", params={**query, "stats": "median"}), 422, "query.stats"
    )
    assert_one_line_error(api.client.get("/analytics/timeseries"), 422, "query.tags")
    # the engine's own refusal (a UsageError) is a 400
    bad_regex = api.client.get("/analytics/timeseries", params={**query, "tags": "re:(("})
    assert_one_line_error(bad_regex, 400, "re:((", "regular expression")

    # the event stream carries the tags' values (the first tag_values event has them all)
    params = {"kinds": "tag_values", "tag_interval": 0.2}
    with api.client.stream("GET", "/events", params=params, timeout=10) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["event"] == "tag_values"
                values = {t["tag"]: t["value"] for t in event["tags"]}
                if "t1" in values:
                    break
    assert values["t1"] == 20.0


def test_a_real_server_fault_is_a_500_with_one_line_and_the_traceback_in_the_log(tmp_path):
    """The runs table dropped under the service by another process: a fault of the server (its store
    is broken), not of the client. The client gets one line; the service's log file the traceback."""
    with served_api(tmp_path) as service:
        con = sqlite3.connect(service.data_dir / "metadata.db", timeout=30)
        try:
            con.execute("DROP TABLE runs")
            con.commit()
        finally:
            con.close()
        response = service.client.get("/runs")
        assert_one_line_error(response, 500, "internal error")
        assert "Traceback" not in response.text and "no such table" not in response.text
        log_file = service.data_dir / "logs" / "aggregator.jsonl"

        def logged() -> list[dict]:
            lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
            return [r for r in lines if r.get("logger") == "aggregator.http" and r.get("level") == "error"]

        (record,) = service.wait_for(logged, timeout=10, what="the fault in the service's log file")
        assert "GET /runs" in record["msg"] and "no such table: runs" in record["msg"]
        assert record["exc"].startswith("Traceback") and "OperationalError" in record["exc"]


@contextlib.contextmanager
def in_process_api(data_dir: Path) -> Iterator[tuple[str, str, object]]:
    """The API over a LocalEngine in this process, served by uvicorn as `aggregator serve` serves it
    (its bind and start): for the one test that must see inside the engine. (url, token, engine)."""
    from app.http import create_app
    from app.http.events import close_streams
    from app.serve import _bind, _start_http
    from engine.api import LocalEngine

    engine = LocalEngine(data_dir)
    app = create_app(engine, token="in-process-token", listen_host="127.0.0.1")
    sock = _bind("127.0.0.1", 0)
    server, thread = _start_http(app, sock)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", "in-process-token", engine
    finally:
        close_streams(app)
        server.should_exit = True
        thread.join(15)
        sock.close()
        engine.close()


def test_a_client_that_goes_away_leaves_no_subscriber_behind(tmp_path):
    """In this process: what is checked is the engine's list of subscribers, which no route shows."""
    with in_process_api(tmp_path / "data") as (url, token, engine):

        def subscribers() -> list:  # the engine's subscriber callbacks (others may come and go)
            return list(engine._subscribers)

        before = subscribers()  # held, so that no new callback can take the id of one that went
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(base_url=url, headers=headers, timeout=10) as client,
            client.stream("GET", "/events", params={"tag_interval": 0}) as stream,
        ):
            lines = stream.iter_lines()  # held: an iterator dropped closes the response
            next(lines)  # the stream is open: it has subscribed
            mine = [c for c in subscribers() if not any(c is b for b in before)]
            assert len(mine) == 1, [getattr(c, "__qualname__", c) for c in subscribers()]
        wait_for(lambda: not any(c is mine[0] for c in subscribers()), timeout=10, what="the unsubscribe")


@pytest.mark.slow
@pytest.mark.timeout(300)  # a simulator, a stream and a stop, each slow on a loaded 2-core machine
def test_a_real_time_pipeline_streams_until_its_job_is_stopped(api):
    """A real_time pipeline in the service, reading a real OPC UA server (the simulator, here)."""
    from tests.pipelines import opcua_stream
    from tests.ui.conftest import opcua_simulator

    with opcua_simulator(1, 2) as sim:
        doc = opcua_stream(sim, name="plc api", max_latency_ms=100)
        assert api.client.post("/pipelines", json=doc, params={"id": "plc"}).status_code == 201
        started = api.client.post("/pipelines/plc/execute")
        assert started.status_code == 202, started.text
        job_id, run_id = started.json()["job_id"], started.json()["run_id"]
        assert run_id
        jobs = [j["id"] for j in api.client.get("/jobs").json()]
        assert job_id in jobs, f"the job is gone at once: {api.client.get(f'/runs/{run_id}').json()}"
        params = {"job": job_id, "tag_interval": 0}
        seen: list[str] = []
        deadline = time.monotonic() + 180
        with api.client.stream("GET", "/events", params=params, timeout=60) as stream:
            for line in stream.iter_lines():  # its statistics come on the stream, tagged with its job
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    seen.append(event["event"])
                    if event["event"] == "stream_stats" and event.get("rows_committed", 0) > 0:
                        break
                    if event["event"] == "run_finished":  # a real-time run must not end by itself
                        detail = api.client.get(f"/runs/{run_id}").json()
                        raise AssertionError(
                            f"the stream ended by itself: {detail.get('record')}; logs: {detail.get('logs')}; "
                            f"events: {seen[-20:]}; service output: {api.service.output()[-3000:]}"
                        )
                assert time.monotonic() < deadline, (
                    f"no committed rows in the job's stats; events: {seen[-20:]}"
                )
        assert api.client.post(f"/jobs/{job_id}/stop").json() == {"id": job_id, "stopping": True}
        record = api.wait_for(
            lambda: (r := api.client.get(f"/runs/{run_id}").json()).get("status") == "cancelled" and r,
            what="the stream to stop",
        )
    assert record["record"]["rows_out"] > 0
    api.wait_for(
        lambda: job_id not in [j["id"] for j in api.client.get("/jobs").json()], what="the job to end"
    )
    assert_one_line_error(api.client.post(f"/jobs/{job_id}/stop"), 404, job_id)
