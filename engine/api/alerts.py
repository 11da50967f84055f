"""EngineAPI: the alerts calls (`engine.alerts`, AlertsAPI in engine/api/protocol.py).

The rules of `error_handling.alerts` are evaluated by `engine.alerts.evaluator.AlertEngine`, which
listens to this engine's events; the alerts (raise -> acknowledge -> clear) are kept in the data
directory's metadata.db (engine/alerts/store.py) and their notifications go out through the outbox
(engine/alerts/delivery.py). Plain data in and out, so the HTTP routes, the CLI and the GUI are thin.
"""

from __future__ import annotations

import getpass
from typing import Any

from engine.errors import DataError

SEVERITIES = ("info", "warning", "critical")
ONE_SHOT_DRAIN_S = 5.0  # a one-shot run's engine waits this long for its notifications at close


class LocalAlerts:
    def __init__(self, core: Any):
        from engine.alerts.evaluator import AlertEngine

        self._core = core
        ws = core.workspace

        def secret(name: str) -> str | None:
            try:
                return ws.secrets.get(name)
            except Exception:
                return None

        self.engine = AlertEngine(
            core.data_dir, spec_of=ws.metadata.pipeline_spec, emit=core.emit, secret=secret
        )
        self._serving = False
        self._unsubscribe = core.subscribe(self.engine.on_event)

    def list(
        self,
        active: bool = True,
        severity: str | None = None,
        pipeline: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Alerts, newest first: open ones (active or acknowledged) or, with `active=False`, all;
        each {id, rule, pipeline, subject, kind, condition, severity, state, message, value,
        notify, raised_at, updated_at, acknowledged_at, acknowledged_by, ack_note, cleared_at}."""
        if severity is not None and severity not in SEVERITIES:
            raise DataError(f"severity '{severity}' is not allowed (allowed: {', '.join(SEVERITIES)})")
        return self.engine.store.list(active=active, severity=severity, pipeline=pipeline, limit=limit)

    def get(self, alert_id: int) -> dict[str, Any]:
        alert = self.engine.store.get(alert_id)
        if alert is None:
            raise DataError(f"no alert with id {alert_id}")
        return alert

    def acknowledge(self, alert_id: int, by: str | None = None, note: str | None = None) -> dict[str, Any]:
        """Acknowledge an open alert (who, when, a note); it stays open until its condition clears."""
        return self.engine.acknowledge(int(alert_id), by or _user(), note)

    def counts(self) -> dict[str, int]:
        """Open alerts by severity: {"info": n, "warning": n, "critical": n}."""
        return self.engine.store.counts()

    def notifications(self) -> dict[str, int]:
        """Notifications delivered and failed delivery attempts in this process, per channel
        (email_delivered, email_failed, webhook_delivered, webhook_failed), and `pending` in the outboxes."""
        return {**self.engine.notifier.figures(), "pending": self.engine.notifier.pending()}

    def evaluate(self) -> None:
        """Evaluate the clock-driven conditions now (the service's ticker does it every second)."""
        self.engine.tick()

    def start(self) -> None:
        """The service starts: notifications left pending are forwarded, the ticker runs."""
        self._serving = True
        self.engine.resume()
        self.engine.start_ticker()

    def close(self) -> None:
        """Stop evaluating. A one-shot engine (no service) first gives its notifications a few
        seconds to go out; what does not stays in the outbox for the service."""
        self._unsubscribe()
        drain = 0.0 if self._serving else ONE_SHOT_DRAIN_S
        # Nothing forwarded by this process, nothing to wait for: the outbox (~25 ms to open at
        # the end of every one-shot run) is not opened, and notifications an earlier process left
        # waiting, which no forwarder of ours would send, do not hold the run's end for 5 s.
        notifier = self.engine.notifier
        self.engine.close(drain if notifier.forwarding() and notifier.pending() else 0.0)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
