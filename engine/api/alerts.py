"""EngineAPI: the alerts calls (`engine.alerts`, AlertsAPI in engine/api/protocol.py).

The rules of `error_handling.alerts` are evaluated by `engine.alerts.evaluator.AlertEngine`, which
listens to this engine's events; the alerts (raise -> acknowledge -> clear) are kept in the data
directory's metadata.db (engine/alerts/store.py) and their notifications go out through the outbox
(engine/alerts/delivery.py). Plain data in and out, so the HTTP routes, the CLI and the GUI are thin.
"""

from __future__ import annotations

import getpass
import sqlite3
import threading
from typing import Any

from engine.errors import DataError

SEVERITIES = ("info", "warning", "critical")
ONE_SHOT_DRAIN_S = 5.0  # a one-shot run's engine waits this long for its notifications at close


class LocalAlerts:
    """The alert engine is built when something needs it (issue 12): a run of a pipeline with alert
    rules, or with alerts still open (a rule removed since: they are cleared at its run's start), a
    call of this API, or the service's start. A one-shot run of a pipeline without rules, most
    batch runs, builds nothing: importing the evaluator, the notifier and the alert store and
    opening the store cost ~12 ms of CPU there, to find no rule. Until built, events of runs of
    such pipelines are let pass: the engine would have found nothing to do for them."""

    def __init__(self, core: Any):
        self._core = core
        self._engine: Any = None
        self._lock = threading.Lock()
        self._serving = False
        self._unsubscribe = core.subscribe(self._on_event)

    @property
    def engine(self) -> Any:
        """The `AlertEngine` (engine/alerts/evaluator.py), built at its first use."""
        engine = self._engine
        if engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._build()
                engine = self._engine
        return engine

    def _build(self) -> Any:
        from engine.alerts.evaluator import AlertEngine

        core = self._core
        ws = core.workspace

        def secret(name: str) -> str | None:
            try:
                return ws.secrets.get(name)
            except Exception:
                return None

        return AlertEngine(core.data_dir, spec_of=ws.metadata.pipeline_spec, emit=core.emit, secret=secret)

    def _on_event(self, event: Any) -> None:
        engine = self._engine
        if engine is None:
            if not self._needs_engine(event):
                return
            engine = self.engine
        engine.on_event(event)

    def _needs_engine(self, event: Any) -> bool:
        """Whether this event, the engine not built yet, needs it: a run starts of a pipeline with
        alert rules in its stored version, or with open alerts. Any other event before that concerns
        runs of pipelines with neither, for which the engine does nothing."""
        if isinstance(event, dict):
            kind, pipeline = event.get("event"), event.get("pipeline")
        else:
            kind, pipeline = getattr(event, "kind", None), getattr(event, "pipeline", None)
        if kind != "run_started" or not pipeline:
            return False
        metadata = self._core.workspace.metadata
        try:
            doc = metadata.pipeline_spec(pipeline)
            if ((doc or {}).get("error_handling") or {}).get("alerts"):
                return True
            # AlertStore's table (engine/alerts/store.py); none yet: no alert was ever raised here
            found = metadata.db.query(
                "SELECT 1 FROM alerts WHERE pipeline = ? AND state != 'cleared' LIMIT 1", [pipeline]
            )
            return next(found, None) is not None
        except sqlite3.OperationalError as exc:
            return "no such table" not in str(exc)  # anything else: let the engine see for itself
        except Exception:
            return True

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
        if self._engine is None:  # never built: nothing evaluated, nothing sent
            return
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
