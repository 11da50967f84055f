"""Pipeline document, version 1: the single source of truth (spec sections 1, 2 and 5).

Transformation steps and connector configs are kept as plain dicts here, exactly as written, and
validated against the registries by `engine.spec.validate`; that keeps the document faithful when
the editor round-trips it and lets validation report every error with its JSON path at once.
"""

# No `from __future__ import annotations` here: pydantic would evaluate every field's annotation
# from its text when each model is made (a `compile` a field), ~5 ms of every command that reads a
# pipeline; written as objects, Python evaluates them once as the class body runs. A model that
# names one defined further down writes that name in quotes.
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


def custom_implementation(data: Any) -> Any:
    """The user guide writes a custom connector's class on the node itself
    (`{"connector_type": "custom", "implementation": "module.Class", "config": {...}}`); the
    connector reads it from its config: it is moved there, once, so both forms mean the same."""
    if not isinstance(data, dict) or data.get("implementation") is None:
        return data
    data = dict(data)
    implementation = data.pop("implementation")
    ctype = str(data.get("connector_type") or "")
    if ctype.strip().lower() != "custom":
        raise ValueError("'implementation' belongs to a custom connector (connector_type: custom)")
    config = dict(data.get("config") or {})
    if config.get("implementation") not in (None, implementation):
        raise ValueError("'implementation' is given twice, differently (on the node and in its config)")
    config["implementation"] = implementation
    data["config"] = config
    return data


# ---- schedules (section 5) ------------------------------------------------------------------
class ManualSchedule(Strict):
    type: Literal["manual"] = "manual"


class CronSchedule(Strict):
    type: Literal["cron"]
    expression: str = Field(description="Five-field crontab expression, e.g. '0 8 * * *'")
    timezone: str = "UTC"

    @field_validator("expression")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        if len(value.split()) != 5:
            raise ValueError("a cron expression has five fields: minute hour day month weekday")
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"invalid cron expression: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)


class IntervalSchedule(Strict):
    type: Literal["interval"]
    seconds: float = Field(gt=0)


class RealTimeSchedule(Strict):
    type: Literal["real_time"]
    trigger: Literal["data_arrival"] = "data_arrival"
    max_latency_ms: int = Field(1000, gt=0)
    batch_size: int = Field(1000, gt=0)
    queue_max_rows: int | None = Field(
        None,
        gt=0,
        description="rows queued per source before back-pressure; default 10 x batch_size, >= 250,000",
    )
    queue_max_bytes: int = Field(64 << 20, gt=0, description="bytes queued per source before back-pressure")
    block_timeout_s: float = Field(
        0.5,
        ge=0,
        description="a full queue blocks its source this long, then drops the oldest rows (counted)",
    )


class FileArrivalSchedule(Strict):
    type: Literal["file_arrival"]
    path: str = Field(description="Glob of the files to watch")
    settle_seconds: float = Field(
        2.0, ge=0, description="a file is read once its size and mtime stay unchanged this long"
    )


Schedule = Annotated[
    ManualSchedule | CronSchedule | IntervalSchedule | RealTimeSchedule | FileArrivalSchedule,
    Field(discriminator="type"),
]


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{value}' (use an IANA name such as 'UTC' or 'Europe/Berlin')"
        ) from None
    return value


# ---- error handling (section 5) -------------------------------------------------------------
class RetryPolicy(Strict):
    max_retries: int = Field(0, ge=0, le=100)
    backoff_multiplier: float = Field(2.0, ge=1.0)
    initial_delay_seconds: float = Field(1.0, ge=0)
    max_delay_seconds: float = Field(300.0, gt=0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based): exponential, capped (the one
        back-off, engine/runs/retry.py)."""
        from itertools import islice

        from engine.runs.retry import retry_delays

        return next(islice(retry_delays(self), attempt - 1, None))


class DeadLetterQueue(Strict):
    enabled: bool = True
    storage: str = Field("reject_store", description="'reject_store' (a DuckDB table) or a file path")


class SmtpSettings(Strict):
    """The SMTP server that sends alert mails (docs/alerts.md)."""

    host: str = Field(min_length=1)
    port: int = Field(587, gt=0, lt=65536)
    username: str | None = None
    password: str | dict[str, str] | None = Field(
        None,
        repr=False,
        description='the login\'s password; better {"secret": "NAME"} (aggregator secret set)',
    )
    starttls: bool = Field(True, description="upgrade the connection with STARTTLS (port 587)")
    ssl: bool = Field(False, description="implicit TLS from the first byte (port 465)")
    verify_tls: bool = Field(True, description="check the server's certificate")
    ca_file: str | None = Field(None, description="a CA bundle (PEM) for a server with a private CA")
    sender: str = Field("aggregator@localhost", description="the From address")
    timeout: float = Field(10.0, gt=0, le=600)


class Notifications(Strict):
    email: list[str] = Field(default_factory=list)
    webhook: str | None = None
    smtp: SmtpSettings | None = Field(None, description="the SMTP server for `email` (needed to send mail)")
    webhook_headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="extra headers of the webhook's requests"
    )


class Alert(Strict):
    """A rule: when `condition` holds, an alert of `severity` is raised and sent to `notify`
    (`email`, `webhook`, or both; default: every channel `notifications` sets up). The condition's
    grammar: engine/alerts/conditions.py, docs/alerts.md."""

    condition: str | dict[str, Any]
    severity: Literal["info", "warning", "critical"] = "warning"
    notify: list[Literal["email", "webhook"]] | Literal["email", "webhook"] | None = None

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        from engine.alerts.conditions import parse_condition

        parse_condition(value)  # a ValueError says what is allowed; validation adds the JSON path
        return value


class ErrorHandling(Strict):
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    dead_letter_queue: DeadLetterQueue = Field(default_factory=DeadLetterQueue)
    notifications: Notifications | None = None
    alerts: list[Alert] = Field(default_factory=list)


# ---- linear form (section 1) ----------------------------------------------------------------
class Endpoint(Strict):
    name: str = Field(min_length=1)
    connector_type: str
    config: dict[str, Any] = Field(default_factory=dict)
    implementation: str | None = Field(
        None, description="custom connectors: 'module.Class' from the data directory's plugins/ folder"
    )

    @model_validator(mode="before")
    @classmethod
    def _implementation(cls, data: Any) -> Any:
        return custom_implementation(data)

    worker_process: bool | None = Field(
        None,
        description="real_time: run this streaming source in a worker process of its own (its batches"
        " come back as Arrow over a pipe), for protocol stacks one Python thread cannot keep up with",
    )


class LinearPipeline(Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    spec_version: Literal[1] = 1
    sources: list[Endpoint] = Field(min_length=1)
    transformations: list[dict[str, Any]] = Field(default_factory=list)
    destinations: list[Endpoint] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=ManualSchedule)
    error_handling: ErrorHandling = Field(default_factory=ErrorHandling)

    @model_validator(mode="before")
    @classmethod
    def _single_forms(cls, data: Any) -> Any:
        """`source: {...}` / `destination: {...}` stand for one-item lists."""
        if isinstance(data, dict):
            data = dict(data)
            for single, plural in (("source", "sources"), ("destination", "destinations")):
                if single in data and plural not in data:
                    data[plural] = [data.pop(single)]
        return data


# ---- graph form (section 2) -----------------------------------------------------------------
class Node(Strict):
    id: str
    kind: Literal["source", "transform", "destination"]
    name: str | None = Field(None, description="Display label when it differs from the id")
    inputs: list[str] = Field(default_factory=list)
    connector_type: str | None = None
    config: dict[str, Any] | None = None
    transform: dict[str, Any] | None = None
    implementation: str | None = Field(
        None, description="custom connectors: 'module.Class' from the data directory's plugins/ folder"
    )
    worker_process: bool | None = Field(
        None,
        description="real_time: run this streaming source in a worker process of its own (its batches"
        " come back as Arrow over a pipe), for protocol stacks one Python thread cannot keep up with",
    )

    @model_validator(mode="before")
    @classmethod
    def _implementation(cls, data: Any) -> Any:
        return custom_implementation(data)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not NODE_ID.match(value):
            raise ValueError("a node id starts with a letter or '_' and holds letters, digits, '_' or '-'")
        return value

    @property
    def label(self) -> str:
        return self.name or self.id


class GraphPipeline(Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    spec_version: Literal[1] = 1
    nodes: list[Node] = Field(min_length=1)
    layout: dict[str, tuple[float, float]] = Field(default_factory=dict)
    schedule: Schedule = Field(default_factory=ManualSchedule)
    error_handling: ErrorHandling = Field(default_factory=ErrorHandling)

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def to_document(self) -> dict[str, Any]:
        return dump(self)


def dump(model: BaseModel) -> dict[str, Any]:
    """The document as saved: JSON types, no empty optional keys."""
    return model.model_dump(mode="json", exclude_none=True)


def parse_input(ref: str) -> tuple[str, str]:
    """`"node"` -> (node, "out"); `"node.port"` -> (node, port)."""
    node, _, port = ref.partition(".")
    return node, port or "out"
