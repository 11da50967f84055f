"""The alert rules of the pipelines that run, evaluated.

`AlertEngine` listens to the engine's events (run finished, source state, alarms, stream counters)
and, on a ticker thread once a second, checks what needs a clock: a source lost for N s, the
outboxes (age, fill, drops), and tag thresholds over the values that arrived since the last tick
(read from the live ring buffers the historian feeds, one Polars frame for every tag; a pipeline
that feeds batches itself calls `observe`). Each rule's per-subject "since" state is kept here;
the alerts themselves (raise, acknowledge, clear; one open per rule and subject) in `AlertStore`.

A rule is loaded when its pipeline starts a run (from the version the run stored), so a one-shot
`aggregator run` evaluates its run-level conditions too (pipeline failed / warning).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.alerts.delivery import ALERTS_PIPELINE, Notifier
from engine.alerts.store import AlertStore

if TYPE_CHECKING:  # Polars is imported when a tag rule has values to look at, not at a service start
    import polars as pl


class _Conditions:
    """engine/alerts/conditions.py, imported at its first use: a run of a pipeline without alert
    rules never parses or checks a condition, so a one-shot `aggregator run` does not import it
    (~5 ms of CPU; issue 12). After the first use `C` is the module itself."""

    def __getattr__(self, name: str) -> Any:
        global C
        from engine.alerts import conditions

        C = conditions  # type: ignore[assignment]
        return getattr(conditions, name)


C: Any = _Conditions()

log = logging.getLogger("aggregator.alerts")

TICK_S = 1.0
REFRESH_S = 5.0  # an open alert's value and message are written at most this often
DEFAULT_OUTBOX_CAP = 256 * 1024 * 1024  # RemoteSinkConfig.max_bytes' default
LOST_STATES = ("lost", "reconnecting")
UP_STATES = ("connected", "subscribed")


@dataclass(frozen=True)
class Rule:
    pipeline: str
    index: int
    condition: C.Condition
    severity: str
    channels: tuple[str, ...]

    @property
    def text(self) -> str:
        return C.describe(self.condition)

    @cached_property
    def key(self) -> str:
        return f"{self.pipeline}#{self.index}:{self.text}"

    @property
    def kind(self) -> str:
        return self.condition.type


def rules_of(pipeline: str, doc: dict[str, Any] | None) -> tuple[list[Rule], dict[str, Any]]:
    """The rules and the notifications of a pipeline document (a bad rule is skipped: the spec's
    validation reports it)."""
    handling = (doc or {}).get("error_handling") or {}
    notifications = handling.get("notifications") or {}
    default = tuple(c for c in ("email", "webhook") if notifications.get(c))
    rules = []
    for i, raw in enumerate(handling.get("alerts") or []):
        try:
            cond = C.parse_condition(raw.get("condition"))
        except (ValueError, AttributeError):
            continue
        notify = raw.get("notify")
        channels = default if notify is None else ((notify,) if isinstance(notify, str) else tuple(notify))
        rules.append(Rule(pipeline, i, cond, str(raw.get("severity") or "warning"), channels))
    return rules, notifications


class AlertEngine:
    def __init__(
        self,
        data_dir: Path | str,
        *,
        spec_of: Callable[[str], dict[str, Any] | None] | None = None,
        emit: Callable[[dict[str, Any]], None] | None = None,
        secret: Callable[[str], str | None] | None = None,
        store: AlertStore | None = None,
        ticker: bool = True,
    ):
        self.data_dir = Path(data_dir)
        self.store = store or AlertStore(self.data_dir / "metadata.db")
        self.notifier = Notifier(self.data_dir, self.store, secret)
        self._spec_of = spec_of or (lambda name: None)
        self._emit = emit or (lambda event: None)
        self._lock = threading.RLock()
        self.rules: dict[str, list[Rule]] = {}
        self.notifications: dict[str, dict[str, Any]] = {}
        self._run_pipeline: dict[str, str] = {}  # run id -> pipeline
        self._lost: dict[tuple[str, str], float] = {}  # (pipeline, source) -> monotonic since
        self._tag_since: dict[tuple[str, str], int] = {}  # (rule key, tag) -> epoch us since beyond
        self._tag_seen: dict[str, int] = {}  # tag -> newest timestamp (us) evaluated
        self._last_drop: dict[tuple[str, str], float] = {}  # (rule key, subject) -> monotonic
        self._outbox_dropped: dict[str, int] = {}  # outbox destination id -> dropped_records seen
        # (rule key, subject) -> when last written, of every open alert (the store's, at start)
        self._open: dict[tuple[str, str], float] = dict.fromkeys(self.store.open_keys(), float("-inf"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticker = ticker  # False: the caller calls tick() (tests)

    # ---- rules -------------------------------------------------------------------------------
    def load(self, pipeline: str, doc: dict[str, Any] | None) -> list[Rule]:
        rules, notifications = rules_of(pipeline, doc)
        with self._lock:
            self.rules[pipeline] = rules
            self.notifications[pipeline] = notifications
        keys = {r.key: r for r in rules}
        now = time.monotonic()
        for alert in self.store.list(active=True, pipeline=pipeline):
            rule = keys.get(alert["rule"])
            if rule is None:  # the rule left the pipeline (or changed): its alert has no one to clear it
                if doc is not None:  # (an unknown document says nothing of its rules)
                    self._orphan(alert)
            elif isinstance(rule.condition, C.Drops):  # after a restart: clears after the quiet time
                self._last_drop.setdefault((rule.key, alert["subject"]), now)
        if any(not isinstance(r.condition, C.PipelineFailed | C.PipelineWarning) for r in rules):
            self.start_ticker()
        return rules

    def _rules(self, pipeline: str | None, *types: type) -> list[Rule]:
        with self._lock:
            pools = [self.rules.get(pipeline, [])] if pipeline is not None else list(self.rules.values())
        return [r for pool in pools for r in pool if isinstance(r.condition, types)]

    # ---- raise and clear ---------------------------------------------------------------------
    def raise_(
        self, rule: Rule, subject: str, message: str, value: float | None = None
    ) -> dict[str, Any] | None:
        """Raise (or keep raised) the alert of `rule` on `subject`. An open one is refreshed in the
        store (value, message) at most every REFRESH_S: a threshold evaluated on every batch does
        not write every batch. Returns the alert when it was written."""
        key = (rule.key, subject)
        now = time.monotonic()
        throttled = not isinstance(rule.condition, C.PipelineFailed | C.PipelineWarning | C.Drops)
        if throttled and key in self._open and now - self._open[key] < REFRESH_S:
            return None
        alert, new = self.store.raise_alert(
            rule=rule.key,
            pipeline=rule.pipeline,
            subject=subject,
            kind=rule.kind,
            condition=rule.text,
            severity=rule.severity,
            message=message,
            value=value,
            notify=",".join(rule.channels),
        )
        self._open[key] = now
        if new:
            log.warning("alert %s raised (%s): %s: %s", alert["id"], rule.severity, rule.pipeline, message)
            self._announce(alert, "raised")
            self._notify(alert, "raised", rule)
        return alert

    def clear(self, rule: Rule, subject: str, message: str | None = None) -> dict[str, Any] | None:
        if self._open.pop((rule.key, subject), None) is None:
            return None  # nothing open (the store is asked only when something is)
        alert = self.store.clear(rule.key, subject, message)
        if alert is not None:
            log.info("alert %s cleared: %s: %s", alert["id"], rule.pipeline, alert["message"])
            self._announce(alert, "cleared")
            self._notify(alert, "cleared", rule)
        return alert

    def _orphan(self, alert: dict[str, Any]) -> None:
        self._open.pop((alert["rule"], alert["subject"]), None)
        cleared = self.store.clear(
            alert["rule"], alert["subject"], f"{alert['message']} (the rule was removed)"
        )
        if cleared is not None:
            self._announce(cleared, "cleared")

    def acknowledge(self, alert_id: int, by: str, note: str | None = None) -> dict[str, Any]:
        alert = self.store.acknowledge(alert_id, by, note)
        self._announce(alert, "acknowledged")
        return alert

    def _announce(self, alert: dict[str, Any], action: str) -> None:
        with contextlib.suppress(Exception):
            self._emit(
                {
                    "event": "alert",
                    "action": action,
                    "alert_id": int(alert["id"]),
                    "pipeline": alert["pipeline"],
                    "subject": alert["subject"],
                    "severity": alert["severity"],
                    "state": alert["state"],
                    "message": alert["message"] or "",
                    "condition": alert["condition"],
                }
            )

    def _notify(self, alert: dict[str, Any], action: str, rule: Rule) -> None:
        try:
            self.notifier.send(alert, action, self.notifications.get(rule.pipeline), list(rule.channels))
        except Exception as exc:  # the alert stands; its notification is said to be lost in the log
            log.error("alert %s: its %s notification could not be queued: %s", alert["id"], action, exc)

    # ---- events ------------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        """An engine event (a typed record of engine/api/events.py, or its wire dict)."""
        data = event if isinstance(event, dict) else event.to_dict()
        kind = data.get("event")
        try:
            if kind == "run_started":
                pipeline = data.get("pipeline") or ""
                self._run_pipeline[str(data.get("run_id"))] = pipeline
                if pipeline and pipeline != ALERTS_PIPELINE:
                    self.load(pipeline, self._spec_of(pipeline))
            elif kind == "run_finished":
                self._run_finished(data)
            elif kind == "source_state":
                self._source_state(data)
            elif kind == "alarm":
                self._alarm(data)
        except Exception:  # never break the engine's event delivery
            log.exception("alerts: evaluating %s", kind)

    def _run_finished(self, data: dict[str, Any]) -> None:
        run_id = str(data.get("run_id"))
        pipeline = data.get("pipeline") or self._run_pipeline.get(run_id)
        self._run_pipeline.pop(run_id, None)
        if not pipeline:
            return
        if pipeline not in self.rules:
            self.load(pipeline, self._spec_of(pipeline))
        if self.rules.get(pipeline):  # no rules, nothing to raise (and no conditions module loaded)
            self._run_rules(pipeline, run_id, data)
        # the stream ended: its sources are no longer lost
        for key in [k for k in self._lost if k[0] == pipeline]:
            del self._lost[key]
            for rule in self._rules(pipeline, C.SourceLost):
                self.clear(rule, key[1], f"{key[1]}: the run ended")

    def _run_rules(self, pipeline: str, run_id: str, data: dict[str, Any]) -> None:
        """A finished run against the pipeline's run rules (failed, finished with warnings)."""
        status = data.get("status")
        error = data.get("error")
        for rule in self._rules(pipeline, C.PipelineFailed):
            if status in ("failed", "interrupted"):
                self.raise_(rule, pipeline, f"run {run_id} {status}" + (f": {error}" if error else ""))
            elif status in ("success", "warning"):
                self.clear(rule, pipeline, f"run {run_id} {status}")
        for rule in self._rules(pipeline, C.PipelineWarning):
            if status == "warning":
                self.raise_(
                    rule, pipeline, f"run {run_id} finished with warnings" + (f": {error}" if error else "")
                )
            elif status == "success":
                self.clear(rule, pipeline, f"run {run_id} success")

    def _source_state(self, data: dict[str, Any]) -> None:
        pipeline = self._run_pipeline.get(str(data.get("run_id")))
        node, state = str(data.get("node") or "source"), data.get("state")
        if not pipeline:
            return
        if state in LOST_STATES:
            self._lost.setdefault((pipeline, node), time.monotonic())
            self._check_lost(pipeline, data.get("detail"))
        elif state in UP_STATES or state == "stopped":
            self._lost.pop((pipeline, node), None)
            for rule in self._rules(pipeline, C.SourceLost):
                if rule.condition.source in (None, node):
                    self.clear(rule, node, f"{node}: {state}")

    def _check_lost(self, only: str | None = None, detail: str | None = None) -> None:
        now = time.monotonic()
        for (pipeline, node), since in list(self._lost.items()):
            if only is not None and pipeline != only:
                continue
            for rule in self._rules(pipeline, C.SourceLost):
                cond = rule.condition
                if cond.source in (None, node) and now - since >= cond.seconds:
                    self.raise_(
                        rule,
                        node,
                        f"source {node} lost for {now - since:.0f} s" + (f" ({detail})" if detail else ""),
                        now - since,
                    )

    def _drop(self, pipeline: str, subject: str, rows: int, why: str) -> None:
        for rule in self._rules(pipeline, C.Drops):
            if rows > rule.condition.more_than:
                self._last_drop[(rule.key, subject)] = time.monotonic()
                self.raise_(rule, subject, f"{rows} records dropped ({why})", float(rows))

    def _alarm(self, data: dict[str, Any]) -> None:
        pipeline = self._run_pipeline.get(str(data.get("run_id")))
        rows = int(data.get("rows") or 0)
        if pipeline and rows > 0 and "drop" in str(data.get("kind", "")) + str(data.get("reason", "")):
            self._drop(
                pipeline, str(data.get("node") or pipeline), rows, str(data.get("reason") or data.get("kind"))
            )

    # ---- the clock ---------------------------------------------------------------------------
    def start_ticker(self) -> None:
        if not self._ticker:
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick_loop, name="alerts", daemon=True)
            self._thread.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:
                log.exception("alerts: tick")

    def tick(self) -> None:
        self._check_lost()
        self._check_drops_clear()
        self._check_outboxes()
        self._check_tags()

    def _check_drops_clear(self) -> None:
        now = time.monotonic()
        for (key, subject), at in list(self._last_drop.items()):
            rule = next((r for r in self._rules(None, C.Drops) if r.key == key), None)
            if rule is None or now - at >= rule.condition.clear_after_s:
                self._last_drop.pop((key, subject), None)
                if rule is not None:
                    self.clear(rule, subject, f"no record dropped for {rule.condition.clear_after_s:g} s")

    def _check_outboxes(self) -> None:
        rules = self._rules(None, C.OutboxAge, C.OutboxFill, C.Drops)
        if not rules:
            return
        wanted = {r.pipeline for r in rules}
        manager = self.notifier.manager
        for entry in manager.status():
            pipeline, destination = entry.get("pipeline"), entry.get("destination")
            if pipeline not in wanted or pipeline == ALERTS_PIPELINE:
                continue
            subject = f"outbox {destination}"
            age = entry.get("oldest_pending_age_s")
            fwd = manager.forwarder(pipeline, destination)
            cap = int(getattr(getattr(fwd, "config", None), "max_bytes", 0) or DEFAULT_OUTBOX_CAP)
            fill = 100.0 * float(entry.get("pending_bytes") or 0) / cap
            dropped = int(entry.get("dropped_records") or 0)
            did = f"{pipeline}/{destination}"
            seen = self._outbox_dropped.setdefault(did, dropped)
            for rule in rules:
                if rule.pipeline != pipeline:
                    continue
                cond = rule.condition
                if isinstance(cond, C.OutboxAge):
                    if age is not None and age > cond.seconds:
                        self.raise_(rule, subject, f"{subject}: oldest record waits {age:.0f} s", float(age))
                    else:
                        self.clear(rule, subject, f"{subject}: nothing older than {cond.seconds:g} s")
                elif isinstance(cond, C.OutboxFill):
                    if fill > cond.percent:
                        self.raise_(rule, subject, f"{subject}: {fill:.1f}% full", fill)
                    else:
                        self.clear(rule, subject, f"{subject}: {fill:.1f}% full")
            if dropped > seen:
                self._outbox_dropped[did] = dropped
                self._drop(pipeline, subject, dropped - seen, "the outbox's cap")

    def _check_tags(self) -> None:
        rules = self._rules(None, C.TagThreshold)
        if not rules:
            return
        ring = _ring_buffer(self.data_dir)
        if ring is None:
            return
        import polars as pl

        tags = [t for t in ring.tags() if any(_tag_match(r.condition.tag, t) for r in rules)]
        parts = []
        for tag in tags:
            ts, values, _quality = ring.window(tag, self._tag_seen.get(tag, -1) + 1)
            if len(ts):
                self._tag_seen[tag] = int(ts[-1])
                parts.append(
                    pl.DataFrame(
                        {
                            "tag": pl.Series([tag]).extend_constant(tag, len(ts) - 1),
                            "timestamp": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                            "value": pl.Series(values, dtype=pl.Float64),
                        }
                    )
                )
        if parts:
            self.observe(pl.concat(parts), rules)

    def observe(self, batch: pl.DataFrame, rules: list[Rule] | None = None) -> None:
        """Evaluate the tag thresholds over a batch of tag rows (tag, timestamp, value): one Polars
        pass per rule; per tag only the batch's end state is looked at, against the kept `since`.
        What changes is written in one transaction for the whole batch."""
        import polars as pl

        raises: list[tuple[Rule, str, str, float]] = []
        clears: list[tuple[Rule, str, str]] = []
        now = time.monotonic()
        for rule in rules if rules is not None else self._rules(None, C.TagThreshold):
            cond = rule.condition
            states = C.tag_states(batch, cond)
            # only tags beyond now, or with a state to end (a since, an open alert), need a look
            tracked = {t for k, t in self._tag_since if k == rule.key} | {
                s for k, s in self._open if k == rule.key
            }
            states = states.filter(pl.col("beyond") | pl.col("tag").is_in(list(tracked)))
            for tag, beyond, last_ts, run_start, whole, value in states.select(
                "tag", "beyond", "last_ts_us", "run_start_us", "whole_run", "last_value"
            ).iter_rows():
                key = (rule.key, tag)
                if beyond:
                    since = self._tag_since.get(key)
                    opened = self._open.get(key)
                    if since is None or not whole:
                        since = run_start
                    if not whole and opened is not None:  # it was within in between: that alert ends
                        clears.append((rule, tag, f"{tag} was back within the threshold"))
                        opened = None
                    self._tag_since[key] = since
                    due = opened is None or now - opened >= REFRESH_S
                    if last_ts - since >= cond.for_s * 1e6 and due:
                        message = f"{tag} = {value:g}, {cond.describe()} for {(last_ts - since) / 1e6:.0f} s"
                        raises.append((rule, tag, message, value))
                else:
                    self._tag_since.pop(key, None)
                    if key in self._open:
                        clears.append((rule, tag, f"{tag} = {value:g}, back within the threshold"))
        self._apply(raises, clears)

    def _apply(self, raises: list[tuple[Rule, str, str, float]], clears: list[tuple[Rule, str, str]]) -> None:
        if not raises and not clears:
            return
        now = time.monotonic()
        by_key = {(r.key, subject): r for r, subject, *_ in (*raises, *clears)}
        new, cleared = self.store.apply(
            [
                {
                    "rule": r.key, "pipeline": r.pipeline, "subject": subject, "kind": r.kind,
                    "condition": r.text, "severity": r.severity, "message": message, "value": value,
                    "notify": ",".join(r.channels),
                }
                for r, subject, message, value in raises
            ],
            [(r.key, subject, message) for r, subject, message in clears],
        )  # fmt: skip
        for r, subject, _ in clears:
            self._open.pop((r.key, subject), None)
        for r, subject, *_ in raises:
            self._open[(r.key, subject)] = now
        for alert, action in [*((a, "cleared") for a in cleared), *((a, "raised") for a in new)]:
            rule = by_key[(alert["rule"], alert["subject"])]
            if action == "raised":
                log.warning(
                    "alert %s raised (%s): %s: %s",
                    alert["id"],
                    rule.severity,
                    rule.pipeline,
                    alert["message"],
                )
            else:
                log.info("alert %s cleared: %s: %s", alert["id"], rule.pipeline, alert["message"])
            self._announce(alert, action)
            self._notify(alert, action, rule)

    # ---- life --------------------------------------------------------------------------------
    def resume(self) -> int:
        """The service starts: notifications left in the alert outboxes are forwarded."""
        return self.notifier.resume()

    def close(self, drain_s: float = 0.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(5.0)
        if drain_s > 0:
            with contextlib.suppress(Exception):
                self.notifier.drain(drain_s)
        self.store.close()


def _tag_match(pattern: str, tag: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(tag, pattern) if any(c in pattern for c in "*?") else tag == pattern


def _ring_buffer(data_dir: Path) -> Any:
    """The live ring buffer of the data directory if a historian made one (never made here: the
    historian makes it with its own limits)."""
    from engine.store import ring_buffer

    with ring_buffer._REGISTRY_LOCK:
        return ring_buffer._REGISTRY.get(Path(data_dir).expanduser().resolve())
