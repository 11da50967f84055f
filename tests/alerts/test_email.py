"""Alert mails through a real SMTP server (aiosmtpd: STARTTLS required, AUTH after TLS), the
EmailTarget alone and through the outbox: a mail raised while the server is down arrives once
it is up, exactly once."""

from __future__ import annotations

import pyarrow as pa
import pytest

from engine.alerts.email_target import EmailTarget, message_id
from engine.alerts.evaluator import AlertEngine
from engine.outbox.target import DeliveryError, UpstreamTarget
from tests.alerts.smtp import PASSWORD
from tests.waiting import wait_for


def _rows(*keys: str) -> pa.Table:
    return pa.table(
        {
            "_key": list(keys),
            "to": ["ops@example.test, boss@example.test"] * len(keys),
            "subject": [f"[CRITICAL] line1: {k}" for k in keys],
            "body": [f"body of {k}\n" for k in keys],
        }
    )


def test_email_target_sends_with_starttls_and_auth_once_per_key(smtp):
    target = EmailTarget(smtp.settings(), "email:line1")
    assert isinstance(target, UpstreamTarget)
    target.deliver(_rows("k1", "k2"))
    target.deliver(_rows("k1", "k2", "k3"))  # a retry of a table that went out in part
    mails = smtp.box.received()
    assert [m["Subject"] for _, m in mails] == [f"[CRITICAL] line1: {k}" for k in ("k1", "k2", "k3")]
    assert mails[0][0] == ["ops@example.test", "boss@example.test"]
    assert mails[0][1]["Message-ID"] == message_id("k1") and mails[0][1]["X-Aggregator-Key"] == "k1"
    assert smtp.box.tls_sessions == 3 and smtp.box.logins == ["alerts"]  # one session, TLS, one login
    target.close()


def test_email_target_errors_are_one_line_and_classed(smtp, smtp_down):
    # aiosmtpd holds back its answer to a wrong password (beyond this timeout): retryable either way
    wrong = EmailTarget(smtp.settings(password="wrong", timeout=1), "email:x")
    with pytest.raises(DeliveryError) as exc:
        wrong.deliver(_rows("a"))
    assert exc.value.retryable and str(exc.value).startswith("email:x: smtp://127.0.0.1:")
    assert "\n" not in str(exc.value)
    untrusted = EmailTarget(smtp.settings(ca_file=None), "email:x")  # the self-signed cert is refused
    with pytest.raises(DeliveryError) as exc:
        untrusted.deliver(_rows("a"))
    assert exc.value.retryable and "certificate" in str(exc.value).lower()
    down = EmailTarget(smtp_down.settings(), "email:x")
    with pytest.raises(DeliveryError) as exc:
        down.deliver(_rows("a"))
    assert exc.value.retryable and "connection refused" in str(exc.value)
    assert smtp.box.received() == []


def test_password_from_a_secret(smtp):
    target = EmailTarget(smtp.settings(password={"secret": "SMTP_PW"}), "email:x", {"SMTP_PW": PASSWORD}.get)
    target.deliver(_rows("s1"))
    assert len(smtp.box.received()) == 1
    missing = EmailTarget(smtp.settings(password={"secret": "NOPE"}), "email:x", lambda name: None)
    with pytest.raises(DeliveryError, match="secret 'NOPE' is not set"):
        missing.deliver(_rows("s2"))


def _doc(name: str, smtp_settings: dict, **notifications) -> dict:
    return {
        "name": name,
        "error_handling": {
            "notifications": {"email": ["ops@example.test"], "smtp": smtp_settings, **notifications},
            "alerts": [{"condition": "pipeline failed", "severity": "critical"}],
        },
    }


def test_alert_raised_while_the_server_is_down_arrives_once_it_is_up(tmp_path, smtp_down):
    data = tmp_path / "data"
    engine = AlertEngine(data, spec_of=lambda name: _doc(name, smtp_down.settings()))
    try:
        engine.on_event({"event": "run_started", "run_id": "r1", "pipeline": "line1"})
        engine.on_event({"event": "run_finished", "run_id": "r1", "status": "failed", "error": "PLC gone"})
        [alert] = engine.store.list()
        assert alert["state"] == "active" and alert["severity"] == "critical"
        outbox = engine.notifier.manager.store("_alerts", "email:line1")
        wait_for(lambda: outbox.status()["link_state"] == "down", 20, what="the link to show down")
        assert outbox.status()["pending_records"] == 1
        assert engine.notifier.figures()["email_failed"] >= 1
        smtp_down.start()
        wait_for(lambda: smtp_down.box.received(), 30, what="the mail to arrive")
        wait_for(lambda: outbox.status()["pending_records"] == 0, 10, what="the outbox to empty")
        [(to, mail)] = smtp_down.box.received()
        assert to == ["ops@example.test"] and mail["Subject"] == "[CRITICAL] line1: run r1 failed: PLC gone"
        assert engine.notifier.figures()["email_delivered"] == 1
    finally:
        engine.notifier.manager.close()
        engine.close()
    assert len(smtp_down.box.received()) == 1  # nothing more came while everything stopped
