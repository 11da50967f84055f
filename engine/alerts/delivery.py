"""Alert notifications through the outbox: the same durable store-and-forward path as the data.

Each (pipeline, channel) has an outbox of its own, named pipeline `_alerts`, destination
`<channel>:<pipeline>` (engine/outbox/store.py `outbox_path`). A notification is one row
committed to it with fsync, keyed `alert-<id>-<action>-<raised_at>`; its forwarder delivers it
with the channel's target: `EmailTarget` (engine/alerts/email_target.py) or the webhook
destination's `WebhookTarget` (engine/connectors/webhook.py, `Idempotency-Key` header). While the
mail server or the receiver is down the rows wait in the outbox, across restarts, and go out once
it is back (the service rebuilds each target from the channel settings kept in the alert store).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.alerts.store import AlertStore

if TYPE_CHECKING:
    import pyarrow as pa  # imported where a notification is made: a service start does not need it

log = logging.getLogger("aggregator.alerts")

ALERTS_PIPELINE = "_alerts"
CHANNELS = ("email", "webhook")


def destination_of(channel: str, pipeline: str) -> str:
    return f"{channel}:{pipeline}"


class CountingTarget:
    """Wraps a target: counts the notifications delivered and the failed attempts (for /metrics)."""

    def __init__(self, target: Any, channel: str, counts: Counter[str], lock: threading.Lock):
        self.target, self.channel, self._counts, self._lock = target, channel, counts, lock
        self.name = target.name

    def open(self) -> None:
        try:
            self.target.open()
        except BaseException:
            with self._lock:
                self._counts[f"{self.channel}_failed"] += 1
            raise

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        try:
            self.target.deliver(table, historical=historical)
        except BaseException:
            with self._lock:
                self._counts[f"{self.channel}_failed"] += 1
            raise
        with self._lock:
            self._counts[f"{self.channel}_delivered"] += table.num_rows

    def close(self) -> None:
        self.target.close()

    def check(self) -> None:
        self.target.check()

    def describe_target(self) -> str:
        return self.target.describe_target()


class Notifier:
    """Puts notifications into the alert outboxes and runs their forwarders."""

    def __init__(self, data_dir: Path, store: AlertStore, secret: Callable[[str], str | None] | None = None):
        self.data_dir = Path(data_dir)
        self.store = store
        self._secret = secret
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._registered: dict[str, str] = {}  # destination -> config json it was registered with
        self._warned: set[tuple[str, str]] = set()  # (pipeline, channel) said to be not set up

    @property
    def manager(self) -> Any:
        from engine.outbox.manager import manager_for

        return manager_for(self.data_dir)

    # ---- channels ----------------------------------------------------------------------------
    def channels(self, notifications: dict[str, Any] | None) -> list[str]:
        """The channels `notifications` sets up (email needs addresses and an smtp server)."""
        n = notifications or {}
        out = []
        if n.get("email") and n.get("smtp"):
            out.append("email")
        if n.get("webhook"):
            out.append("webhook")
        return out

    def _config(self, channel: str, notifications: dict[str, Any]) -> dict[str, Any]:
        if channel == "email":
            return {"smtp": notifications["smtp"], "to": list(notifications["email"])}
        return {"url": notifications["webhook"], "headers": dict(notifications.get("webhook_headers") or {})}

    def _make(self, channel: str, destination: str, config: dict[str, Any]) -> tuple[Callable[[], Any], Any]:
        from engine.outbox.config import RemoteSinkConfig

        if channel == "email":
            from engine.alerts.email_target import EmailTarget

            settings = config["smtp"]

            def make_email() -> Any:
                return CountingTarget(
                    EmailTarget(settings, destination, self._secret), channel, self.counts, self._lock
                )

            return make_email, RemoteSinkConfig(max_tries=5)
        from engine.connectors.webhook import WebhookConnector, WebhookSinkConfig
        from engine.context import RunContext

        sink = WebhookSinkConfig(
            url=config["url"], headers=config.get("headers") or {}, timeout=10.0, max_tries=5
        )
        ctx = RunContext(
            pipeline=ALERTS_PIPELINE,
            data_dir=self.data_dir,
            secret=self._secret or (lambda name: ""),  # type: ignore[arg-type]
            historian=None,
        )

        def make_webhook() -> Any:
            return CountingTarget(
                WebhookConnector.make_target(sink, ctx, destination), channel, self.counts, self._lock
            )

        return make_webhook, sink

    def _register(self, channel: str, destination: str, config: dict[str, Any]) -> None:
        text = json.dumps(config, sort_keys=True, default=str)
        if self._registered.get(destination) == text:
            fwd = self.manager.forwarder(ALERTS_PIPELINE, destination)
            if fwd is not None and fwd.is_alive():
                return
        self.store.save_channel(destination, channel, text)
        make, sink = self._make(channel, destination, config)
        self.manager.register(ALERTS_PIPELINE, destination, make, sink)
        self._registered[destination] = text

    def resume(self) -> int:
        """The service starts: a forwarder for every alert outbox with notifications waiting (its
        target rebuilt from the stored channel settings). Returns how many."""
        saved = self.store.channels()
        folder = self.data_dir / "outbox"  # engine/outbox/store.py OUTBOX_DIR: read without importing it
        if not saved or not folder.is_dir() or not any(folder.glob(f"{ALERTS_PIPELINE}--*")):
            return 0  # nothing of ours waits: the outbox (and pyarrow) is not loaded for nothing
        started = 0
        for pipeline, destination in self.manager.destinations():
            if pipeline != ALERTS_PIPELINE or destination not in saved:
                continue
            if not self.manager.store(pipeline, destination).pending()[1]:
                continue
            channel, text = saved[destination]
            self._register(channel, destination, json.loads(text))
            started += 1
        return started

    # ---- sending -----------------------------------------------------------------------------
    def send(
        self, alert: dict[str, Any], action: str, notifications: dict[str, Any] | None, channels: list[str]
    ) -> list[str]:
        """Commit one notification of `alert` (`raised` or `cleared`) to each channel's outbox
        (durable when this returns) and make sure its forwarder runs. Returns the channels."""
        notifications = notifications or {}
        done = []
        key = f"alert-{alert['id']}-{action}-{alert['raised_at']}"
        for channel in channels:
            if channel not in self.channels(notifications):
                if (alert["pipeline"], channel) not in self._warned:
                    self._warned.add((alert["pipeline"], channel))
                    need = (
                        "a webhook url" if channel == "webhook" else "addresses in email and an smtp server"
                    )
                    log.warning(
                        "alerts of %s: notify names %s, but notifications has no %s: not sent",
                        alert["pipeline"], channel, need,
                    )  # fmt: skip
                continue
            destination = destination_of(channel, alert["pipeline"])
            config = self._config(channel, notifications)
            table = (
                _email_row(alert, action, key, config["to"])
                if channel == "email"
                else _webhook_row(alert, action, key)
            )
            outbox = self.manager.store(ALERTS_PIPELINE, destination, connector_type=channel)
            outbox.commit((lambda first_rec, t=table: t, table.num_rows), None)
            self._register(channel, destination, config)
            done.append(channel)
        return done

    def forwarding(self) -> bool:
        """Whether this process forwards alert notifications (it queued one, or the service resumed
        the waiting ones): only then is there something to wait for at close."""
        return bool(self._registered)

    def pending(self) -> int:
        total = 0
        for pipeline, destination in self.manager.destinations():
            if pipeline == ALERTS_PIPELINE:
                total += self.manager.store(pipeline, destination).pending()[1]
        return total

    def drain(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the alert outboxes are empty (a one-shot run ends)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def figures(self) -> dict[str, int]:
        with self._lock:
            return {
                f"{c}_{k}": int(self.counts[f"{c}_{k}"]) for c in CHANNELS for k in ("delivered", "failed")
            }


def _text(alert: dict[str, Any], action: str) -> tuple[str, str]:
    severity = str(alert["severity"]).upper()
    head = "CLEARED" if action == "cleared" else severity
    subject = f"[{head}] {alert['pipeline']}: {alert['message']}"
    lines = [
        f"Alert {alert['id']} {action}: {alert['message']}",
        "",
        f"Pipeline:  {alert['pipeline']}",
        f"Subject:   {alert['subject']}",
        f"Condition: {alert['condition']}",
        f"Severity:  {alert['severity']}",
        f"Raised at: {alert['raised_at']}",
    ]
    if alert.get("cleared_at"):
        lines.append(f"Cleared at: {alert['cleared_at']}")
    if alert.get("value") is not None:
        lines.append(f"Value:     {alert['value']:g}")
    return subject, "\n".join(lines) + "\n"


def _email_row(alert: dict[str, Any], action: str, key: str, to: list[str]) -> pa.Table:
    import pyarrow as pa

    subject, body = _text(alert, action)
    return pa.table({"_key": [key], "to": [", ".join(to)], "subject": [subject], "body": [body]})


def _webhook_row(alert: dict[str, Any], action: str, key: str) -> pa.Table:
    import pyarrow as pa

    return pa.table(
        {
            "_key": [key],
            "action": [action],
            "alert_id": pa.array([int(alert["id"])], pa.int64()),
            "pipeline": [alert["pipeline"]],
            "subject": [alert["subject"]],
            "condition": [alert["condition"]],
            "severity": [alert["severity"]],
            "state": [alert["state"]],
            "message": [alert["message"]],
            "value": pa.array([alert.get("value")], pa.float64()),
            "raised_at": [alert["raised_at"]],
            "cleared_at": pa.array([alert.get("cleared_at")], pa.string()),
        }
    )
