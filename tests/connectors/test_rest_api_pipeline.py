"""rest_api in whole pipelines through the CLI: a paged API into a Parquet file and out to a REST
receiver; an auth failure is one line (status and URL, never the token), exit 1, nothing written;
a token given in clear works and the run says so."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from app.cli import main
from tests.connectors.rest_api_server import Request, RestServer, ok

RECORDS = [{"id": i, "asset": f"pump-{i % 7}", "hours": i / 4} for i in range(230)]
TOKEN = "tkn-very-secret-42"


@pytest.fixture
def server():
    s = RestServer()

    def items(r: Request):
        if r.headers.get("authorization") != f"Bearer {TOKEN}":
            return ok({"error": "bad token"}, 401)
        page, size = int(r.query["page"]), int(r.query["per_page"])
        return ok({"data": {"items": RECORDS[(page - 1) * size : page * size]}})

    s.routes["/api/v1/work-orders"] = items
    s.received = []

    def ingest(r: Request):
        if r.method == "OPTIONS":  # test connection
            return ok({})
        s.received.append(r.json())
        return ok({"accepted": True}, 202)

    s.routes["/ingest"] = ingest
    yield s
    s.close()


def spec(tmp: Path, server: RestServer, token: object) -> Path:
    doc = {
        "name": "cmms work orders",
        "sources": [
            {
                "name": "cmms",
                "connector_type": "REST API",
                "config": {
                    "url": server.url,
                    "endpoint": "/api/v1/work-orders",
                    "auth_method": "bearer_token",
                    "auth_params": {"token": token},
                    "records_path": "$.data.items",
                    "pagination": {
                        "type": "page",
                        "page_param": "page",
                        "size_param": "per_page",
                        "size": 50,
                    },
                    "connection_timeout": 5,
                    "retry_attempts": 1,
                    "retry_backoff": 0.01,
                    "rate_limit": 100,
                    "rate_limit_period": "second",
                },
            }
        ],
        "destinations": [
            {"name": "out", "connector_type": "file", "config": {"path": "out.parquet"}},
            {
                "name": "mes",
                "connector_type": "rest-api",
                "config": {"url": server.url + "/ingest", "batch_rows": 100, "wrap": "records"},
            },
        ],
        "error_handling": {"retry_policy": {"max_retries": 0}},
    }
    path = tmp / "pipeline.json"
    path.write_text(json.dumps(doc))
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_rest_to_parquet_and_rest(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AGGREGATOR_SECRET_CMMS_TOKEN", TOKEN)
    path = spec(tmp_path, server, {"secret": "cmms_token"})
    code, _, err = run(capsys, "validate", path)
    assert code == 0, err
    code, _out, err = run(capsys, "run", path, "--data-dir", tmp_path / "data")
    assert code == 0, err
    frame = pl.read_parquet(tmp_path / "out.parquet")
    assert frame.get_column("id").to_list() == list(range(230))
    assert [len(b["records"]) for b in server.received] == [100, 100, 30]
    assert server.received[0]["records"][1] == RECORDS[1]
    assert not [m for _, m in run_logs(tmp_path / "data") if "clear text" in m]


def test_auth_failure_is_one_line_and_writes_nothing(server, tmp_path, capsys):
    path = spec(tmp_path, server, "tkn-WRONG-99")
    code, _out, err = run(capsys, "run", path, "--data-dir", tmp_path / "data")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert f"GET {server.url}/api/v1/work-orders: HTTP 401 Unauthorized" in lines[0]
    assert "tkn-WRONG-99" not in err and "Traceback" not in err
    assert not (tmp_path / "out.parquet").exists()
    assert not list(tmp_path.glob(".out.parquet*"))
    assert server.received == []
    assert len(server.requests("/api/v1/work-orders")) <= 4  # no retry: only the first concurrent pages


def test_token_in_clear_works_and_warns(server, tmp_path, capsys):
    path = spec(tmp_path, server, TOKEN)
    code, out, err = run(capsys, "run", path, "--data-dir", tmp_path / "data")
    assert code == 0, err
    assert pl.read_parquet(tmp_path / "out.parquet").height == 230
    warned = [m for level, m in run_logs(tmp_path / "data") if level == "warning" and "clear text" in m]
    assert len(warned) == 1 and warned[0].startswith("auth_params.token given in clear text")
    assert TOKEN not in out + err + warned[0]


def run_logs(data: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(data / "metadata.db")
    try:
        return con.execute("SELECT level, message FROM run_logs ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.fixture
def engine(tmp_path):
    from engine.api import LocalEngine

    eng = LocalEngine(tmp_path / "data")
    yield eng
    eng.close()


def test_connectors_page_test_connection_and_form(server, engine, monkeypatch):
    monkeypatch.setenv("AGGREGATOR_SECRET_CMMS_TOKEN", TOKEN)
    config = {
        "url": server.url,
        "endpoint": "/api/v1/work-orders",
        "auth_method": "bearer_token",
        "auth_params": {"token": {"secret": "cmms_token"}},
        "pagination": {"type": "page", "size_param": "per_page", "size": 50, "page_param": "page"},
    }
    result = engine.connectors.test("rest_api", "source", config).result(30)
    assert result["ok"] is True, result
    assert len(server.requests("/api/v1/work-orders")) == 1  # one request
    bad = {**config, "auth_params": {"token": "tkn-NOPE"}}
    result = engine.connectors.test("REST API", "source", bad).result(30)
    assert result["ok"] is False
    assert result["error"].endswith(
        f"GET {server.url}/api/v1/work-orders: HTTP 401 Unauthorized (check auth_method and auth_params)"
    )
    assert "tkn-NOPE" not in result["error"]
    sink = {"url": server.url + "/ingest"}
    assert engine.connectors.test("rest_api", "destination", sink).result(30)["ok"] is True
    # the form: a token in clear is marked; the schema has both roles and every auth method
    issues = engine.connectors.check("rest_api", "source", bad)
    assert {
        "path": "auth_params.token",
        "message": "a secret in clear: store it as a secret and pick its name",
    } in issues
    assert engine.connectors.check("rest_api", "source", config) == []
    schema = engine.connectors.schema("rest_api", "source")
    assert "pagination" in schema["properties"] and "records_path" in schema["properties"]
    assert engine.connectors.schema("rest-api", "destination")["properties"]["method"]["enum"] == [
        "POST",
        "PUT",
    ]
