"""The service's logs: human lines on the console, JSON lines in a rotated file, secrets masked.

`setup_logging(data_dir)` installs two handlers on the root logger:
- the console (stderr): one short human line per record, `13:50:02 retry 1/3 in 2 s: <reason>`;
- `<data_dir>/logs/aggregator.jsonl`: one JSON object per line (`ts`, `level`, `logger`, `msg`, and
  `run_id`, `pipeline`, `node` when the record has them), rotated at `max_bytes` with `backups` old
  files kept (`aggregator.jsonl.1` ... `.5`). `aggregator logs` reads them (app/logs_cmd.py).

Both handlers carry the secret-masking filter of engine/secrets.py, so a secret value resolved by
this process never reaches the console or the file, whichever logger wrote it.

`EventLog` turns the engine's events into the lines an operator needs (run started and finished,
retry with the reason and the next delay, source lost or back, schedule fired, rows dropped): the
service subscribes it to the engine. `event_line(event)` is the pure part of it, and `retry_line`
is what `aggregator run` prints for a retry.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

LOG_FILE = "aggregator.jsonl"
MAX_BYTES = 10 * 1024 * 1024  # one file; then it is rotated
BACKUPS = 5  # rotated files kept: at most ~60 MB of logs
EVENTS_LOGGER = "aggregator.events"
CONTEXT_FIELDS = ("run_id", "pipeline", "node")  # copied from a record into its JSON line when set
_HANDLER_TAG = "_aggregator_service_handler"
DROP_LINE_EVERY_S = 1.0  # rows dropped by a source: at most one line a second, with the sum


def log_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "logs"


def log_file(data_dir: Path | str) -> Path:
    return log_dir(data_dir) / LOG_FILE


# ---- formatters ----------------------------------------------------------------------------------
class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line (a message's own line breaks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        from engine.secrets import mask

        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = mask(str(value))
        if record.exc_info or record.exc_text:
            line["exc"] = mask(record.exc_text or self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """`HH:MM:SS message`; warnings and errors say so (`HH:MM:SS warning: message`)."""

    def format(self, record: logging.LogRecord) -> str:
        from engine.secrets import mask

        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"{stamp} {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return mask(text)


# ---- set-up --------------------------------------------------------------------------------------
def setup_logging(
    data_dir: Path | str,
    *,
    console: bool = True,
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
) -> Path:
    """Install the console and JSON-lines file handlers on the root logger (replacing those of an
    earlier call); returns the log file's path. The folder is created owner-only (0700)."""
    from engine.secrets import MaskingFilter, install_log_masking

    folder = log_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / LOG_FILE
    root = logging.getLogger()
    numeric = level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    teardown_logging()
    masking = MaskingFilter()
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    file_handler.setFormatter(JsonLinesFormatter())
    handlers: list[logging.Handler] = [file_handler]
    if console:
        console_handler = logging.StreamHandler(stream or sys.stderr)
        console_handler.setFormatter(ConsoleFormatter())
        handlers.append(console_handler)
    for handler in handlers:
        handler.addFilter(masking)
        handler.setLevel(numeric)
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
    if root.level > numeric:  # the root's default (warning) would hold the info lines back
        root.setLevel(numeric)
    install_log_masking()  # records of every logger are masked where they are made, too
    return path


def teardown_logging() -> None:
    """Remove (and close) the handlers `setup_logging` installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
            handler.close()


# ---- events as lines -----------------------------------------------------------------------------
def as_dict(event: Any) -> Mapping[str, Any]:
    """A typed event record (engine/api/events.py) or a wire dict, as the wire dict."""
    return event.to_dict() if hasattr(event, "to_dict") else event


def _seconds(value: float) -> str:
    return f"{value:g} s"


def retry_line(event: Any) -> str | None:
    """`retry 1/3 in 2 s: <reason>` for a `retrying` (batch run) or `sink_retry` (a stream's
    destination) event; None for any other event. The reason is masked."""
    from engine.secrets import mask

    e = as_dict(event)
    kind = e.get("event")
    if kind == "retrying":
        n = e.get("retry", (e.get("attempt") or 1) - 1)
        reason = e.get("error")
    elif kind == "sink_retry":
        n = e.get("attempt")
        reason = f"destination '{e.get('node')}': {e.get('error')}" if e.get("error") else None
    else:
        return None
    of = f"/{e['max_retries']}" if e.get("max_retries") is not None else ""
    line = f"retry {n}{of} in {_seconds(float(e.get('delay_s') or 0))}"
    return mask(line + (f": {reason}" if reason else ""))


def event_line(event: Any, pipeline: str | None = None) -> tuple[int, str] | None:
    """(level, human line) for an event an operator needs to see, else None. `pipeline` names the
    run's pipeline where the event itself does not. Source state changes are not here: they need
    memory (each reason said once per outage), which `EventLog` keeps."""
    from engine.secrets import mask

    e = as_dict(event)
    kind = e.get("event")
    name = e.get("pipeline") or pipeline
    label = f'"{name}"' if name else "a pipeline"
    if kind == "run_started":
        return logging.INFO, mask(f"run {e.get('run_id')} of {label} started")
    if kind == "run_finished":
        status = str(e.get("status"))
        line = f"run {e.get('run_id')} of {label} finished: {status}"
        if e.get("duration_s") is not None:
            line += f" in {float(e['duration_s']):.2f} s"
        if e.get("rows_in") is not None:
            line += (
                f" (rows in {e.get('rows_in') or 0:,}, out {e.get('rows_out') or 0:,},"
                f" rejected {e.get('rows_rejected') or 0:,})"
            )
        if e.get("error"):
            line += f": {e['error']}"
        level = {"success": logging.INFO, "failed": logging.ERROR}.get(status, logging.WARNING)
        return level, mask(line)
    if kind in ("retrying", "sink_retry"):
        line = retry_line(e)
        return (logging.WARNING, f"{label}: {line}") if line else None
    if kind == "schedule_fired":
        lag = e.get("lag_s")
        why = e.get("trigger") or e.get("schedule") or "schedule"
        return logging.INFO, mask(
            f"schedule fired for {label} ({why})" + (f", {float(lag) * 1000:.0f} ms late" if lag else "")
        )
    if kind == "alarm" and e.get("kind") == "rows_dropped":
        return logging.WARNING, mask(
            f"{label}: {e.get('node')} dropped {e.get('rows'):,} row(s) ({e.get('reason')}), "
            f"{e.get('total_dropped'):,} in all"
        )
    return None


class EventLog:
    """Subscribe it to the engine (`engine.subscribe(EventLog())`): the events an operator needs
    become log records of `aggregator.events`, each with its run id, pipeline and node, so the
    console shows the line and the JSON file can be filtered by run (`aggregator logs --run`)."""

    def __init__(self, logger: logging.Logger | None = None):
        self.logger = logger or logging.getLogger(EVENTS_LOGGER)
        self._pipelines: dict[str, str] = {}  # run id -> pipeline name, while the run lasts
        self._started: dict[str, float] = {}
        self._states: Any = None  # SourceStateLines, made at the first source_state event (a stream)
        self._drops: dict[tuple[str, str], dict[str, Any]] = {}  # (run, node) -> drops not said yet
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        e = dict(as_dict(event))
        kind, run_id = e.get("event"), e.get("run_id")
        said: list[tuple[int, str, str | None]] = []  # (level, line, node)
        with self._lock:
            if kind == "run_started" and run_id:
                self._pipelines[run_id] = e.get("pipeline") or ""
                self._started[run_id] = time.monotonic()
            pipeline = e.get("pipeline") or self._pipelines.get(run_id or "")
            if kind == "run_finished" and run_id:
                started = self._started.pop(run_id, None)
                if e.get("duration_s") is None and started is not None:
                    e["duration_s"] = time.monotonic() - started
                self._pipelines.pop(run_id, None)
                for (run, node), drop in list(self._drops.items()):  # drops not said yet, then the end
                    if run == run_id:
                        del self._drops[(run, node)]
                        if drop["rows"]:
                            said.append(self._drop_line(drop, pipeline))
            if kind == "source_state":
                if self._states is None:  # engine.streaming (~50 modules, 4 MB) only once a stream runs
                    from engine.streaming.run import SourceStateLines

                    self._states = SourceStateLines()
                line = self._states(e)
                if line:
                    down = e.get("state") in self._states.DOWN or e.get("state") == "connecting"
                    level = logging.WARNING if down else logging.INFO
                    said.append((level, f'"{pipeline}": {line}' if pipeline else line, e.get("node")))
            elif kind == "alarm" and e.get("kind") == "rows_dropped":
                drop = self._drops.setdefault(
                    (run_id or "", e.get("node") or ""), {"rows": 0, "at": float("-inf"), "event": e}
                )
                drop["rows"] += e.get("rows") or 0
                drop["event"] = e
                now = time.monotonic()
                if now - drop["at"] >= DROP_LINE_EVERY_S:  # a full queue drops often: a line a second
                    drop["at"] = now
                    said.append(self._drop_line(drop, pipeline))
            else:
                found = event_line(e, pipeline)
                if found:
                    said.append((*found, e.get("node")))
        for level, line, node in said:
            context = {"run_id": run_id, "pipeline": pipeline or None, "node": node}
            self.logger.log(level, line, extra={k: v for k, v in context.items() if v})

    @staticmethod
    def _drop_line(drop: dict[str, Any], pipeline: str | None) -> tuple[int, str, str | None]:
        """The drops summed since the last line, with the total so far."""
        event = {**drop["event"], "rows": drop["rows"]}
        drop["rows"] = 0
        level, line = event_line(event, pipeline) or (logging.WARNING, "")
        return level, line, event.get("node")
