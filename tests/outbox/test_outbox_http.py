"""The outbox through a real `aggregator serve`: the `/outbox` routes, `RemoteOutbox` (the
RemoteEngine's `outbox`), and `aggregator outbox ...` going through the service that owns the
data directory.

The data directory is seeded through the real outbox (the destination's sink, its forwarder and a
SQLite upstream that refuses two records for good and then goes down): two quarantined records and
five pending ones. The service then owns it; it does not know the pipeline, so nothing is forwarded
while the test runs and every figure is exact.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import pytest

from app.outbox_cmd import _api
from engine.api.outbox import LocalOutbox
from engine.api.protocol import EngineAPI, OutboxAPI
from engine.api.remote import RemoteEngine
from engine.api.remote.outbox import RemoteOutbox
from engine.errors import DataError, UsageError
from engine.outbox.manager import OutboxManager
from engine.service import token as api_token
from tests.outbox.conftest import commit, tags
from tests.outbox.upstream import Upstream, attach
from tests.service.conftest import cli, spawn
from tests.waiting import wait_for

FIRST = "/t3|sim|1767225600003000"  # the key part of record 3 (tests/outbox/conftest.py tags())


def key_part(k: int) -> str:
    return f"/t{k % 4}|sim|{1767225600000000 + k * 1000}"


def seed_outbox(data_dir: Path, upstream_path: Path) -> Upstream:
    """line1/central: 14 records accepted, 7 delivered, 2 quarantined (records 4 and 9, one entry
    each), 5 pending with the link down."""
    data_dir.mkdir(parents=True, exist_ok=True)
    upstream = Upstream(upstream_path)
    attach(data_dir, upstream)
    manager = OutboxManager(data_dir)
    try:
        commit(manager, tags(1, start=3))
        wait_for(lambda: upstream.count() == 1, what="first record delivered")
        first = upstream.rows()[0][0]
        store = manager.store("line1", "central")
        for n, (start, bad) in enumerate(((4, 4), (8, 9)), start=1):
            upstream.poison = {first.replace(FIRST, key_part(bad))}
            commit(manager, tags(4, start=start), max_tries=2)
            wait_for(
                lambda n=n: len(store.quarantine_list()) == n and store.pending()[1] == 0,
                what=f"quarantine entry {n}",
            )
        upstream.down, upstream.retry_after = True, 0.05
        commit(manager, tags(5, start=12))
        wait_for(lambda: store.status()["link_state"] == "down", what="link down")
    finally:
        manager.close()
    return upstream


@pytest.fixture
def served(tmp_path):
    data = tmp_path / "data"
    seed_outbox(data, tmp_path / "central.sqlite")
    service = spawn(data, tmp_path / "serve.out")
    try:
        service.wait_ready()
        token = api_token.ensure(data)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=service.url, headers=headers, timeout=20) as http:
            yield service, http
        assert service.stop() == 0
    finally:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)


def one_line_error(response: httpx.Response, status: int, text: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "\n" not in error and text in error, error
    return error


def test_status_and_quarantine_routes(served):
    service, http = served
    assert httpx.get(service.url + "/outbox", timeout=10).status_code == 401  # the token is needed
    [row] = http.get("/outbox").json()
    assert (row["pipeline"], row["destination"]) == ("line1", "central")
    assert row["appended_records"] == 14 and row["forwarded_records"] == 7
    assert row["pending_records"] == 5 and row["pending_bytes"] > 0 and row["dropped_records"] == 0
    assert row["quarantined_records"] == 2 and row["quarantine_entries"] == 2
    assert row["link_state"] == "stopped" and row["oldest_pending_age_s"] >= 0
    # the same figures as the CLI reading the files itself
    [local] = LocalOutbox(service.data_dir).status()
    assert {k: local[k] for k in ("appended_records", "pending_records", "quarantined_records")} == {
        k: row[k] for k in ("appended_records", "pending_records", "quarantined_records")
    }

    entries = http.get("/outbox/quarantine").json()
    assert [e["records"] for e in entries] == [1, 1] and all("refused" in e["reason"] for e in entries)
    assert http.get("/outbox/quarantine", params={"pipeline": "other"}).json() == []
    assert len(http.get("/outbox/quarantine", params={"destination": "central"}).json()) == 2
    first, second = (e["id"] for e in entries)

    records = http.get(
        "/outbox/quarantine/export", params={"pipeline": "line1", "destination": "central"}
    ).json()
    assert [(r["tag"], r["value"], r["quarantine_id"]) for r in records] == [
        ("t0", 4.0, first),
        ("t1", 9.0, second),
    ]
    only = http.get(
        "/outbox/quarantine/export", params={"pipeline": "line1", "destination": "central", "id": second}
    ).json()
    assert [r["value"] for r in only] == [9.0]

    # wrong requests: one line, 4xx
    one_line_error(
        http.post("/outbox/quarantine/retry", json={"pipeline": "line1", "destination": "central"}),
        400,
        "all=true",
    )
    one_line_error(
        http.delete("/outbox/quarantine", params={"pipeline": "nope", "destination": "x", "all": True}),
        404,
        "no outbox for destination 'x' of pipeline 'nope'",
    )
    one_line_error(
        http.delete("/outbox/quarantine", params={"pipeline": "line1", "destination": "central", "id": 0}),
        422,
        "id",
    )

    retried = http.post(
        "/outbox/quarantine/retry", json={"pipeline": "line1", "destination": "central", "ids": [first]}
    )
    assert retried.json() == {"pipeline": "line1", "destination": "central", "records": 1}
    deleted = http.delete(
        "/outbox/quarantine", params={"pipeline": "line1", "destination": "central", "all": True}
    )
    assert deleted.json()["records"] == 1
    assert http.get("/outbox/quarantine").json() == []
    [row] = http.get("/outbox").json()
    assert row["pending_records"] == 6 and row["quarantine_entries"] == 0  # the retried one waits again

    assert http.put("/outbox/edge-id", json={"edge_id": "box-7"}).json() == {"edge_id": "box-7"}
    assert http.get("/outbox/edge-id").json() == {"edge_id": "box-7"}
    one_line_error(http.put("/outbox/edge-id", json={"edge_id": "no spaces"}), 422, "edge id")


def test_the_routes_are_in_the_openapi_document(served):
    _, http = served
    doc = http.get("/openapi.json").json()
    assert {"/outbox", "/outbox/quarantine", "/outbox/quarantine/retry", "/outbox/quarantine/export"} <= set(
        doc["paths"]
    )
    status = doc["components"]["schemas"]["OutboxStatus"]["properties"]
    assert {"pending_records", "oldest_pending_age_s", "link_state", "dropped_records"} <= set(status)


def test_remote_outbox_is_the_outbox_api(served):
    service, _ = served
    with RemoteEngine(service.url, api_token.ensure(service.data_dir)) as engine:
        assert isinstance(engine, EngineAPI)
        box = engine.outbox
        members = [n for n in vars(OutboxAPI) if not n.startswith("_")]
        assert len(members) == 9 and all(callable(getattr(box, n, None)) for n in members)
        [row] = box.status()
        assert row["pending_records"] == 5 and row["quarantined_records"] == 2
        entries = box.quarantine("line1", "central")
        assert len(entries) == 2 and box.quarantine(pipeline="other") == []
        assert [r["value"] for r in box.quarantine_records("line1", "central", [entries[1]["id"]])] == [9.0]
        assert len(box.quarantine_records("line1", "central")) == 2
        assert box.quarantine_delete("line1", "central", [entries[0]["id"]]) == 1
        assert box.quarantine_retry("line1", "central") == 1  # all
        assert box.quarantine() == [] and box.status()[0]["pending_records"] == 6
        with pytest.raises(DataError, match="no outbox for destination 'x' of pipeline 'line1'"):
            box.quarantine_retry("line1", "x", [1])
        assert box.set_edge_id("edge-2") == "edge-2" and box.edge_id() == "edge-2"
        box.start()  # the service runs its forwarders already
        with pytest.raises(UsageError, match="stop it instead"):
            box.stop()


def test_the_cli_goes_through_the_service(served, tmp_path):
    service, http = served
    d = str(service.data_dir)
    api, close = _api(argparse.Namespace(data_dir=service.data_dir))
    close()
    assert isinstance(api, RemoteOutbox)  # not the files: the service that owns them
    api, close = _api(argparse.Namespace(data_dir=tmp_path / "elsewhere"))
    assert isinstance(api, LocalOutbox)
    done = cli("outbox", "status", "--data-dir", d, "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["pending_records"] == 5 and row["forwarder"] == "stopped" and row["link_state"] == "stopped"
    done = cli("outbox", "quarantine", "list", "--data-dir", d)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
    out = tmp_path / "q.json"
    done = cli("outbox", "quarantine", "export", "line1", "central", "--output", out, "--data-dir", d)
    assert done.returncode == 0 and done.stdout.startswith("2 records written")
    assert [r["tag"] for r in json.loads(out.read_text())] == ["t0", "t1"]
    entries = http.get("/outbox/quarantine").json()
    done = cli("outbox", "quarantine", "retry", "line1", "central", "--id", entries[0]["id"], "--data-dir", d)
    assert done.returncode == 0 and done.stdout.startswith("1 records put back"), done.stderr
    done = cli("outbox", "quarantine", "delete", "line1", "central", "--all", "--data-dir", d)
    assert done.returncode == 0 and done.stdout.startswith("1 records deleted"), done.stderr
    # the service saw both (its API answers from the same files, through its own process)
    assert (
        http.get("/outbox/quarantine").json() == [] and http.get("/outbox").json()[0]["pending_records"] == 6
    )
    done = cli("outbox", "quarantine", "delete", "nope", "x", "--all", "--data-dir", d)
    assert (
        done.returncode != 0
        and done.stderr.count("\n") == 1
        and "no outbox for destination 'x'" in done.stderr
    )
