"""Alerts under a real `aggregator serve`: a failing run (started by the CLI, run by the service)
raises the rule's alert; `aggregator alerts` lists it through the service, `aggregator alerts ack`
and `POST /alerts/{id}/acknowledge` acknowledge it; `/monitoring/alerts` and `/metrics` show it;
the mail reaches a real SMTP server (STARTTLS, AUTH) from the service; a restart keeps it."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from engine.service import token as api_token
from tests.pipelines import csv_into_duckdb
from tests.service.conftest import cli, serve  # noqa: F401 (the fixture)
from tests.waiting import wait_for

pytestmark = pytest.mark.slow  # a service and a few CLI processes


def _spec(folder, smtp_settings) -> dict:
    doc = csv_into_duckdb(folder, 5, name="line1", table="t")
    doc["nodes"][0]["config"]["path"] = str(folder / "missing.csv")
    doc["error_handling"] = {
        "notifications": {"email": ["ops@example.test"], "smtp": smtp_settings},
        "alerts": [{"condition": "pipeline failed", "severity": "critical"}],
    }
    return doc


def test_alerts_through_the_service_cli_http_metrics_and_mail(serve, smtp, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    service = serve(data_dir=data)
    spec = tmp_path / "line1.json"
    spec.write_text(json.dumps(_spec(tmp_path, smtp.settings())), encoding="utf-8")
    run = cli("run", spec, "--data-dir", data)
    assert run.returncode != 0 and "missing.csv" in run.stderr + run.stdout

    listed = cli("alerts", "--json", "--data-dir", data)
    assert listed.returncode == 0, listed.stderr
    [alert] = json.loads(listed.stdout)
    assert (alert["pipeline"], alert["kind"], alert["severity"], alert["state"]) == (
        "line1", "pipeline_failed", "critical", "active",
    )  # fmt: skip
    text = cli("alerts", "--data-dir", data).stdout
    assert text.splitlines()[0].split()[:3] == ["ID", "SEVERITY", "STATE"] and "critical  active" in text

    headers = {"Authorization": f"Bearer {api_token.ensure(data)}"}
    monitoring = httpx.get(service.url + "/monitoring/alerts", headers=headers, timeout=10).json()
    assert monitoring[0]["kind"] == "alert_pipeline_failed" and monitoring[0]["id"] == alert["id"]
    assert any(m["kind"] == "run_failed" for m in monitoring)  # the run itself is listed as before

    [(to, mail)] = wait_for(smtp.box.received, 30, what="the alert mail from the service")
    assert to == ["ops@example.test"] and mail["Subject"].startswith("[CRITICAL] line1: run ")

    missing = httpx.post(service.url + "/alerts/999/acknowledge", headers=headers, json={}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "no alert with id 999"
    acked = cli(
        "alerts", "ack", str(alert["id"]), "--note", "valve replaced", "--by", "maria", "--data-dir", data
    )
    assert acked.returncode == 0 and f"alert {alert['id']} acknowledged by maria" in acked.stdout
    answer = httpx.post(
        service.url + f"/alerts/{alert['id']}/acknowledge",
        headers=headers,
        json={"by": "jo", "note": "seen"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert (answer.json()["state"], answer.json()["acknowledged_by"], answer.json()["ack_note"]) == (
        "acknowledged",
        "jo",
        "seen",
    )

    def metrics():
        body = httpx.get(service.url + "/metrics", headers=headers, timeout=10).text
        return 'aggregator_alert_notifications_total{channel="email",result="delivered"} 1.0' in body and body

    body = wait_for(metrics, 20, what="the delivered mail in /metrics")
    assert 'aggregator_alerts_active{severity="critical"} 1.0' in body

    assert service.stop(signal.SIGTERM) == 0
    again = serve(data_dir=data)
    kept = httpx.get(again.url + "/alerts", headers=headers, params={"all": True}, timeout=10).json()
    assert [(a["id"], a["state"], a["acknowledged_by"]) for a in kept] == [
        (alert["id"], "acknowledged", "jo")
    ]
    assert len(smtp.box.received()) == 1  # delivered once, not again after the restart


def test_one_shot_run_with_the_mail_server_down_then_the_service_delivers_once(serve, smtp_down, tmp_path):  # noqa: F811
    """`aggregator run` without a service raises the alert, cannot reach the SMTP server, and
    leaves the mail in the outbox; `aggregator serve` started later delivers it, once; the alert
    events reach a RemoteEngine subscriber over the event stream."""
    from engine.api.events import AlertChanged
    from engine.api.remote import RemoteEngine

    data = tmp_path / "data"
    spec = tmp_path / "line1.json"
    spec.write_text(json.dumps(_spec(tmp_path, smtp_down.settings(timeout=1))), encoding="utf-8")
    run = cli("run", spec, "--data-dir", data)
    assert run.returncode != 0
    status = json.loads(cli("outbox", "status", "--json", "--data-dir", data).stdout)
    [mail] = [s for s in status if s["pipeline"] == "_alerts"]
    assert (mail["destination"], mail["pending_records"]) == ("email:line1", 1)

    smtp_down.start()
    service = serve(data_dir=data)
    [(to, message)] = wait_for(smtp_down.box.received, 30, what="the mail left by the one-shot run")
    assert to == ["ops@example.test"] and message["Subject"].startswith("[CRITICAL] line1: run ")

    remote = RemoteEngine(service.url, api_token.ensure(data))
    got: list = []
    unsubscribe = remote.subscribe(got.append)
    try:
        [alert] = remote.alerts.list()
        remote.alerts.acknowledge(alert["id"], "ops", "on it")
        event = wait_for(
            lambda: next((e for e in got if isinstance(e, AlertChanged)), None), 20, what="the alert event"
        )
        assert (event.action, event.alert_id, event.state, event.severity) == (
            "acknowledged",
            alert["id"],
            "acknowledged",
            "critical",
        )
        assert remote.alerts.counts() == {"info": 0, "warning": 0, "critical": 1}
    finally:
        unsubscribe()
        remote.close()
    wait_for(
        lambda: (
            json.loads(cli("outbox", "status", "--json", "--data-dir", data).stdout)[0]["pending_records"]
            == 0
        ),
        20,
        what="the outbox to empty",
    )
    assert len(smtp_down.box.received()) == 1
