"""Issue 14, item 6: secrets end to end. A connector password and an API token are planted (through
the API, as a user stores them), used by pipelines whose connections fail (a real PostgreSQL asked
for a database it does not have, a port where nothing listens, a REST API that refuses the request
and says back the key and the basic-auth header it got), then every way the product speaks is
exercised: the service's output and log file, the API's answers (pipelines, connectors, runs,
errors, jobs, the dashboard), test-connection errors, data exports (CSV and Parquet), the spec
files the API saved, `--json` and `--debug` output of the CLI, beside the service and on its own
(where the CLI's own process resolves them). Then everything written (the data directory byte for
byte, SQLite and DuckDB files included, the config folder, every captured output) is searched for
the secrets in clear, URL-encoded, JSON-escaped and base64 (at every alignment, so a secret inside
a longer encoded text, such as a basic-auth header, is found too). They must appear nowhere."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import polars as pl
import pytest

from tests.conftest import require_service
from tests.connectors.rest_api_server import RestServer
from tests.net import closed_port
from tests.service.conftest import ROOT
from tests.service.http_server import served_api, service_env

# Distinctive, and changed by URL-encoding and JSON escaping (/, +, @, ", \)
PASSWORD = 'Pw/Leak+Canary@7731"x\\z'
TOKEN = "tok_LeakCanary/90210+q="
SECRETS = {"PLANT_PG_PW": PASSWORD, "PLANT_API_TOKEN": TOKEN}


def forms(secret: str) -> set[bytes]:
    """The byte strings that would betray `secret`."""
    raw = secret.encode()
    out = {
        raw,
        quote(secret, safe="").encode(),
        quote_plus(secret).encode(),
        quote(secret).encode(),
        json.dumps(secret)[1:-1].encode(),
        repr(secret)[1:-1].encode(),
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):  # the secret at any offset inside a longer base64 text
            text = encode(b"\0" * shift + raw).rstrip(b"=")
            core = text[4 if shift else 0 : -4]  # drop the chars shared with what is around it
            out.add(core)
    return {f for f in out if len(f) >= 8}


FORMS = {name: forms(value) for name, value in SECRETS.items()}


def leaks(blob: bytes) -> list[str]:
    return [f"{name} as {f!r}" for name, found in FORMS.items() for f in found if f in blob]


def search(paths: list[Path], captured: dict[str, bytes]) -> list[str]:
    found = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            for hit in leaks(path.read_bytes()):
                found.append(f"{path}: {hit}")
    for where, blob in captured.items():
        for hit in leaks(blob):
            found.append(f"{where}: {hit}")
    return found


def echo(request) -> tuple[int, dict, dict]:
    """An API that refuses the request and says what it got, as some do (the connector shows the
    start of a 400's body): the Authorization header (basic: base64 of user:password), or the key
    as it came in the query (URL-encoded) and decoded."""
    auth = request.headers.get("authorization")
    key = request.query.get("key", "")
    said = f"bad credentials {auth}" if auth else f"bad key ?key={quote_plus(key)} ({key})"
    return 400, {"error": said}, {"X-Said": said}


def pipelines(folder: Path, pg_port_closed: int, rest_url: str) -> dict[str, dict]:
    pg = {
        "host": "127.0.0.1",
        "username": "postgres",
        "password": {"secret": "PLANT_PG_PW"},
        "query": "SELECT 1 AS a",
        "connect_timeout": 5,
    }
    out = str(folder / "out.csv")
    sink = {
        "id": "dst",
        "kind": "destination",
        "inputs": ["src"],
        "connector_type": "file",
        "config": {"path": out},
    }

    def graph(name: str, ctype: str, config: dict) -> dict:
        src = {"id": "src", "kind": "source", "connector_type": ctype, "config": config}
        return {"name": name, "spec_version": 1, "nodes": [src, sink]}

    rest = {
        "url": rest_url,
        "endpoint": "/v1/items",
        "auth_method": "api_key",
        "auth_params": {"query_param": "key", "api_key": {"secret": "PLANT_API_TOKEN"}},
        "headers": {"X-Plant": {"secret": "PLANT_API_TOKEN"}},
        "retry_attempts": 0,
        "connection_timeout": 5,
    }
    basic = {
        **rest,
        "auth_method": "basic",
        "auth_params": {"username": "op", "password": {"secret": "PLANT_PG_PW"}},
    }
    return {
        "leak_pg_db": graph("leak_pg_db", "postgresql", {**pg, "port": 5432, "database": "no_such_db_leak"}),
        "leak_pg_port": graph(
            "leak_pg_port", "postgresql", {**pg, "port": pg_port_closed, "database": "test"}
        ),
        "leak_rest": graph("leak_rest", "rest_api", rest),
        "leak_basic": graph("leak_basic", "rest_api", basic),
    }


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **env},
    )


@pytest.fixture
def rest_api():
    server = RestServer()
    server.routes["/v1/items"] = echo
    yield server
    server.close()


def test_planted_secrets_appear_nowhere(tmp_path, rest_api):
    require_service("postgresql")
    captured: dict[str, bytes] = {}
    specs = tmp_path / "specs"
    specs.mkdir()
    docs = pipelines(tmp_path, closed_port(), rest_api.url)
    for name, doc in docs.items():
        (specs / f"{name}.json").write_text(json.dumps(doc))
    data_csv = tmp_path / "readings.csv"
    pl.DataFrame({"tag": ["a", "b"], "value": [1.5, 2.5]}).write_csv(data_csv)
    good = {
        "name": "leak_good",
        "spec_version": 1,
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "file", "config": {"path": str(data_csv)}},
            {
                "id": "dst",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "duckdb",
                "config": {"table": "leak_check"},
            },
        ],
    }

    with served_api(tmp_path / "svc", "--debug") as api:
        env = {**service_env(api.config_dir), "AGGREGATOR_HOME": str(api.data_dir)}
        c = api.client

        def keep(what: str, response) -> None:
            captured[what] = f"{response.status_code} {dict(response.headers)}\n".encode() + response.content

        for name, value in SECRETS.items():  # planted as a user stores them
            answer = c.put(f"/secrets/{name}", json={"value": value})
            assert answer.status_code == 200, answer.text
            keep(f"PUT /secrets/{name}", answer)
            keep(f"GET /secrets/{name}", c.get(f"/secrets/{name}"))

        # saved connectors and their failing connection tests
        connectors = {
            "plant_pg": ("postgresql", docs["leak_pg_db"]["nodes"][0]["config"]),
            "plant_pg_port": ("postgresql", docs["leak_pg_port"]["nodes"][0]["config"]),
            "plant_rest": ("rest_api", docs["leak_rest"]["nodes"][0]["config"]),
        }
        for name, (ctype, config) in connectors.items():
            made = c.post(
                "/connectors",
                json={"name": name, "connector_type": ctype, "role": "source", "config": config},
            )
            assert made.status_code == 201, made.text
            keep(f"POST /connectors {name}", made)
            tested = c.post(f"/connectors/{name}/test")
            keep(f"POST /connectors/{name}/test", tested)
            assert tested.status_code == 200 and tested.json()["ok"] is False, tested.text
            keep(f"GET /connectors/{name}", c.get(f"/connectors/{name}"))
        keep("GET /connectors", c.get("/connectors"))

        # pipelines saved through the API (the editor's path), run, and failed
        runs = {}
        for name, doc in [*docs.items(), ("leak_good", good)]:
            made = c.post(f"/pipelines?id={name}", json=doc)
            assert made.status_code == 201, made.text
            keep(f"POST /pipelines {name}", made)
            record = api.run_to_end(name)
            runs[name] = record
            keep(f"GET /runs/{record['run_id']}", c.get(f"/runs/{record['run_id']}"))
            keep(f"GET /pipelines/{name}", c.get(f"/pipelines/{name}"))
            keep(f"GET /pipelines/{name}/runs", c.get(f"/pipelines/{name}/runs"))
        assert {n: r["status"] for n, r in runs.items()} == {
            "leak_pg_db": "failed",
            "leak_pg_port": "failed",
            "leak_rest": "failed",
            "leak_basic": "failed",
            "leak_good": "success",
        }, {n: r["record"].get("error") for n, r in runs.items()}
        assert "no_such_db_leak" in str(
            runs["leak_pg_db"]["record"]["error"]
        )  # the real server's refusal is shown
        for path in (
            "/pipelines",
            "/runs",
            "/jobs",
            "/monitoring/alerts",
            "/monitoring/system-health",
            "/dashboard/summary",
            "/secrets",
        ):
            answer = c.get(path)
            assert answer.status_code == 200, (path, answer.text)
            keep(f"GET {path}", answer)
        for fmt in ("csv", "parquet"):
            exported = c.get(f"/data/objects/leak_check/export?format={fmt}")
            assert exported.status_code == 200, exported.text
            keep(f"export {fmt}", exported)

        # the CLI beside the service: --json and --debug
        served = cli("--debug", "run", str(specs / "leak_rest.json"), "--json", env=env)
        captured["aggregator --debug run leak_rest.json --json (served)"] = served.stdout + served.stderr
        assert served.returncode == 1 and b"***" in served.stdout  # the record says the echo, masked
        service_output = api.service.output().encode()
    captured["serve output"] = service_output

    # the CLI on its own (the engine in this process resolves the secrets itself)
    local = cli("--debug", "run", str(specs / "leak_basic.json"), "--json", env=env)
    captured["aggregator --debug run leak_basic.json --json (local)"] = local.stdout + local.stderr
    assert local.returncode == 1 and b"***" in local.stdout  # the echoed basic-auth header, masked

    # not vacuous: the secrets did reach the API, which said them back, and the product masked them
    sent = rest_api.requests("/v1/items")
    assert any(r.query.get("key") == TOKEN for r in sent) and any(
        "basic" in str(r.headers).lower() for r in sent
    )
    assert any(b"***" in blob for blob in captured.values())

    found = search([api.data_dir, api.config_dir, tmp_path], captured)
    assert not found, "secrets leaked:\n" + "\n".join(found[:40])
