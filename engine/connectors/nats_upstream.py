"""The `nats` destination: publish to NATS JetStream with `Nats-Msg-Id` and wait for the acks
(issue 11). The subject layout and stream set-up for many edge boxes: docs/upstream-nats-webhook.md.

- `message: record` (the default): one JSON message per record, `Nats-Msg-Id` = the record's `_key`,
  so JetStream drops a copy it has already stored within the stream's `duplicate_window`.
- `message: batch`: up to `batch_rows` records per message (JSON array, or an Arrow IPC stream with
  `batch_format: arrow`), `Nats-Msg-Id` = `batch-<SHA-256 of the batch's keys>`: the same rows give
  the same id, so a redelivered batch is dropped; a batch cut differently (after a poison record)
  is a new id, and the consumer dedupes on the `_key` inside (every record carries it).
- The subject is a template: `{edge}` (the box's id, engine/outbox/keys.py), `{pipeline}`,
  `{destination}` and any column of the data (`{tag}`, `{source}`...). A value's `.`, `*`, `>`, white
  space and control characters become `_`, an empty or null one `_`, so each placeholder is exactly one subject token.
- Publishing is pipelined: every message of a delivery is sent (up to `max_in_flight` awaiting
  their acks), then the acks are gathered; `deliver` returns once every message is acknowledged
  (stored, or recognised as a duplicate), else raises `DeliveryError`.

nats-py is asyncio: the target runs its own loop on a thread and `deliver` (called by the forwarder
on its own thread) hands the publishing to it and waits. The connection does not reconnect by
itself: a delivery that fails drops it, and the next delivery (the forwarder's retry) connects
afresh, so a black-holed link costs one `ack_timeout`, not the client's ping interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import threading
import urllib.parse
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from engine.connectors.base import ConnectorConfig, one_line_error
from engine.connectors.mq_common import MqSourceOptions
from engine.connectors.registry import register
from engine.connectors.webhook import json_frame, json_lines, keys_digest
from engine.context import RunContext
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.connector import CheckByOpening, RemoteConnector
from engine.outbox.target import KEY_COLUMN, DeliveryError

if TYPE_CHECKING:
    from engine.connectors.base import StreamingSource

T = TypeVar("T")

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# One subject token: no separator, no wildcard, no white space or control character (the same
# pattern in Python's re and Polars' Rust regex).
_TOKEN_UNSAFE = r"[\x00-\x20\x7f-\x9f\s.*>]"
_FIXED_FIELDS = ("edge", "pipeline", "destination")
HISTORICAL_HEADER = "Aggregator-Historical"
_DUPLICATE = re.compile(rb'"duplicate"\s*:\s*true')  # the server writes `"duplicate": true`


class NatsTls(ConnectorConfig):
    ca_file: str | None = Field(
        None, description="the CA that signed the servers' certificates (default: the system's)"
    )
    cert_file: str | None = Field(
        None, description="this box's client certificate (when the servers verify clients)"
    )
    key_file: str | None = Field(None, description="the client certificate's private key")

    @model_validator(mode="after")
    def _pair(self) -> NatsTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class NatsSourceConfig(MqSourceOptions):
    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1, description="nats:// or tls:// URLs"
    )
    subject: str = Field(description="the subject to read; wildcards allowed (plant.*.telemetry, plant.>)")
    queue_group: str | None = Field(
        None, description="core: share the subject's messages with this queue group"
    )
    jetstream: bool = Field(False, description="read through a JetStream durable consumer (ack after commit)")
    stream: str | None = Field(None, description="JetStream: the stream (found from the subject when unset)")
    durable: str | None = Field(
        None, description="JetStream: the durable consumer's name (default: <pipeline>-<source>)"
    )
    deliver_policy: Literal["all", "new", "last"] = Field(
        "all", description="JetStream: where a consumer created here starts"
    )
    ack_wait_s: float = Field(
        30.0, gt=0, le=86400, description="JetStream: re-delivery after this long unacked"
    )
    max_ack_pending: int = Field(20_000, ge=1, description="JetStream: unacked messages, at most")
    max_pending_messages: int = Field(
        100_000, ge=1, description="core: messages held; more are dropped, counted"
    )
    user: str | None = None
    password: str | None = Field(None, repr=False, description='use {"secret": "NAME"}')
    token: str | None = Field(None, repr=False, description='use {"secret": "NAME"}')
    tls: NatsTls | None = None

    @model_validator(mode="after")
    def _coherent(self) -> NatsSourceConfig:
        tokens = self.subject.split(".")
        if not self.subject or any(not t or " " in t for t in tokens) or (">" in tokens[:-1]):
            raise ValueError(f"subject '{self.subject}': dot-separated tokens, '>' only as the last one")
        if self.password is not None and self.user is None:
            raise ValueError("password needs user")
        if not self.jetstream and (self.durable or self.stream):
            raise ValueError("durable and stream are for JetStream: set jetstream: true")
        return self


class NatsSinkConfig(RemoteSinkConfig):
    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        min_length=1,
        description="the cluster's nats:// (or tls://) URLs; the client picks one that answers",
    )
    subject: str = Field(
        "plant.{edge}.{pipeline}.{tag}",
        description=(
            "subject template: {edge}, {pipeline}, {destination} and any column ({tag}, {source}...); "
            "each placeholder becomes one token"
        ),
    )
    stream: str | None = Field(
        None,
        description="the JetStream stream the subjects belong to (checked at connect; expected on publish)",
    )
    create_stream: bool = Field(False, description="create the stream when it does not exist")
    stream_subjects: list[str] | None = Field(
        None,
        description="the subjects of a stream created here (default: the template's fixed prefix + '.>')",
    )
    duplicate_window_s: float = Field(
        600.0, gt=0, le=7 * 86400, description="a created stream's dedupe window (Nats-Msg-Id), seconds"
    )
    replicas: int = Field(1, ge=1, le=5, description="a created stream's replicas (3 on a cluster)")
    max_age_s: float | None = Field(None, gt=0, description="a created stream's message age limit, seconds")
    user: str | None = Field(None, description="user name (with password)")
    password: str | None = Field(
        None, repr=False, description='use {"secret": "NAME"}, never the password itself'
    )
    token: str | None = Field(None, repr=False, description='an auth token: use {"secret": "NAME"}')
    creds_file: str | None = Field(None, description="a .creds file (JWT + NKey; needs the nkeys package)")
    tls: NatsTls | None = Field(
        None, description="TLS to the servers (a tls:// URL or a server that requires TLS uses it)"
    )
    connect_timeout: float = Field(5.0, gt=0, le=120, description="seconds to wait for a connection")
    ack_timeout: float = Field(10.0, gt=0, le=600, description="seconds to wait for a delivery's acks")
    message: Literal["record", "batch"] = Field(
        "record", description="one message per record, or one per batch of records"
    )
    batch_rows: int = Field(1000, ge=1, le=1_000_000, description="records per message (message: batch)")
    batch_format: Literal["json", "arrow"] = Field(
        "json", description="a batch message's body: a JSON array, or an Arrow IPC stream"
    )
    max_in_flight: int = Field(4096, ge=1, le=1_000_000, description="messages awaiting their ack, at most")

    @field_validator("servers")
    @classmethod
    def _nats_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^(nats|tls|ws|wss)://", url):
                raise ValueError(f"'{_safe_url(url)}' is not a nats://, tls://, ws:// or wss:// URL")
        return value

    @field_validator("subject")
    @classmethod
    def _subject_template(cls, value: str) -> str:
        skeleton = _FIELD.sub("x", value)
        if "{" in skeleton or "}" in skeleton:
            raise ValueError("use {name} placeholders (letters, digits, '_') and no other braces")
        tokens = skeleton.split(".")
        if any(not t or re.search(r"\s", t) for t in tokens):
            raise ValueError("a subject is dot-separated tokens, none empty, no white space")
        if any(t in ("*", ">") or "*" in t or ">" in t for t in tokens):
            raise ValueError("a subject to publish on has no wildcards (* or >)")
        return value

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or re.search(r"[\s.*>/\\]", value)):
            raise ValueError("a stream name has no white space, '.', '*', '>', '/' or '\\'")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> NatsSinkConfig:
        if self.create_stream and not self.stream:
            raise ValueError("create_stream needs a stream name ('stream')")
        if self.password is not None and self.user is None:
            raise ValueError("password needs user")
        if sum(x is not None for x in (self.user, self.token, self.creds_file)) > 1:
            raise ValueError("give one of user/password, token or creds_file")
        if self.creds_file is not None:
            import importlib.util

            if importlib.util.find_spec("nkeys") is None:
                raise ValueError("creds_file needs the Python package nkeys, which is not installed")
        if (
            self.create_stream
            and self.stream_subjects is None
            and default_stream_subjects(self.subject) is None
        ):
            raise ValueError(
                "the subject starts with a placeholder: give stream_subjects for the stream to create"
            )
        return self


def default_stream_subjects(template: str) -> list[str] | None:
    """The subjects a created stream captures: the template's fixed leading tokens + `.>`
    (`plant.{edge}.{pipeline}.{tag}` -> `plant.>`); the subject itself when it has no placeholder;
    None when it starts with one."""
    tokens = template.split(".")
    fixed: list[str] = []
    for token in tokens:
        if _FIELD.search(token):
            break
        fixed.append(token)
    if len(fixed) == len(tokens):
        return [template]
    if not fixed:
        return None
    return [".".join([*fixed, ">"])]


def _safe_url(url: str) -> str:
    """A server URL without its user:password (or token) part."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _token(value: str) -> str:
    safe = re.sub(_TOKEN_UNSAFE, "_", value)
    return safe or "_"


def subject_expr(template: str, columns: list[str], fixed: dict[str, str]) -> pl.Expr | str:
    """The subject of every row: a string when the template names no column, else a Polars
    expression. Raises ValueError for a placeholder that is neither fixed nor a column."""
    parts: list[pl.Expr | str] = []
    pos = 0
    per_row = False
    for match in _FIELD.finditer(template):
        if match.start() > pos:
            parts.append(template[pos : match.start()])
        name = match.group(1)
        if name in fixed:
            parts.append(_token(fixed[name]))
        elif name in columns:
            per_row = True
            text = pl.col(name).cast(pl.String).str.replace_all(_TOKEN_UNSAFE, "_")
            parts.append(pl.when(text.is_null() | (text == "")).then(pl.lit("_")).otherwise(text))
        else:
            raise ValueError(
                f"subject: {{{name}}} is neither {', '.join('{' + f + '}' for f in _FIXED_FIELDS)} "
                f"nor a column of the data (columns: {', '.join(columns)})"
            )
        pos = match.end()
    if pos < len(template):
        parts.append(template[pos:])
    if not per_row:
        return "".join(p for p in parts if isinstance(p, str))
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def _reason(exc: BaseException, timeout: float) -> str:
    """Why a connection failed, in a plant engineer's words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return one_line_error(exc, 200)


def _msg_id(key: str) -> str:
    """A record key as a header value: keys with a line break (a tag name may hold one) are hashed,
    since a header value cannot carry one."""
    if "\r" in key or "\n" in key:
        import hashlib

        return "sha256-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


class _Loop:
    """An asyncio loop on a daemon thread of its own; `run` waits for a coroutine from any thread."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class NatsTarget(CheckByOpening):
    """An `UpstreamTarget` for NATS JetStream (engine/outbox/target.py)."""

    def __init__(self, config: NatsSinkConfig, ctx: RunContext, name: str):
        self.config, self.ctx, self.name = config, ctx, name
        self._loop: _Loop | None = None
        self._nc: Any = None
        self._js: Any = None
        self._closed: asyncio.Event | None = None
        self._acks: _Acks | None = None
        self._inbox = ""
        self._lock = threading.Lock()
        self._fixed: dict[str, str] | None = None
        self.acked = 0  # messages acknowledged as newly stored
        self.duplicates = 0  # messages JetStream recognised as duplicates (Nats-Msg-Id)

    # --- the contract ------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            self._open()

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        if table.num_rows == 0:
            return
        if KEY_COLUMN not in table.column_names:
            raise DeliveryError(f"the data has no '{KEY_COLUMN}' column", retryable=False)
        if table.column(KEY_COLUMN).null_count:
            raise DeliveryError(f"a record has no key ('{KEY_COLUMN}' is null)", retryable=False)
        with self._lock:
            try:
                self._open()
            except DeliveryError as exc:
                # Not reaching the stream is never the data's fault: retried, never quarantined.
                raise DeliveryError(str(exc), retryable=True) from None
            messages = self._messages(table, historical)
            assert self._loop is not None
            # The coroutine bounds each of its waits by ack_timeout; this bound only guards a stuck
            # loop, so it is generous: 30 s beyond that plus 1 ms a message.
            bound = self.config.ack_timeout + 30 + len(messages) / 1000
            try:
                self._loop.run(self._publish(messages), bound)
            except DeliveryError as exc:
                if exc.retryable:
                    self._drop()
                raise
            except TimeoutError:
                self._drop()
                raise DeliveryError(
                    f"publishing did not finish within {bound:.0f} s", retryable=True
                ) from None
            except Exception as exc:  # anything unforeseen: a fresh connection at the next try
                self._drop()
                raise DeliveryError(one_line_error(exc, 200), retryable=True) from None

    def close(self) -> None:
        with self._lock:
            self._drop()
            if self._loop is not None:
                self._loop.stop()
                self._loop = None

    def describe_target(self) -> str:
        where = ", ".join(_safe_url(s) for s in self.config.servers)
        stream = f" stream {self.config.stream}" if self.config.stream else ""
        return f"{where}{stream} subject {self.config.subject}"

    # --- connection ----------------------------------------------------------------------------

    def _where(self) -> str:
        return ", ".join(_safe_url(s) for s in self.config.servers)

    def _open(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        self._nc = self._js = None
        if self._loop is None:
            self._loop = _Loop(f"nats-{self.name}")
        try:
            self._loop.run(self._connect(), self.config.connect_timeout * (len(self.config.servers) + 1) + 30)
        except TimeoutError:
            raise DeliveryError(
                f"no NATS server answered within {self.config.connect_timeout:g} s ({self._where()})",
                retryable=True,
            ) from None

    async def _connect(self) -> None:
        import nats
        import nats.errors
        import nats.js.errors

        cfg = self.config
        closed = asyncio.Event()
        last_error: list[BaseException] = []

        async def on_error(exc: BaseException) -> None:
            last_error.append(exc)

        async def on_closed() -> None:
            closed.set()

        options: dict[str, Any] = {
            "servers": cfg.servers,
            "name": f"data-aggregator {self.ctx.pipeline}/{self.name}",
            "connect_timeout": cfg.connect_timeout,
            "allow_reconnect": False,
            # Each server is tried twice, 0.1 s apart (0 would try forever); the forwarder retries.
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.1,
            "error_cb": on_error,
            "closed_cb": on_closed,
            "pending_size": 64 * 1024 * 1024,
            # Subjects are valid by construction (the template is checked, every value is made one
            # clean token), and the reply subjects are our own inbox's: not checked again per message.
            "skip_subject_validation": True,
        }
        if cfg.user is not None:
            options["user"], options["password"] = cfg.user, cfg.password
        if cfg.token is not None:
            options["token"] = cfg.token
        if cfg.creds_file is not None:
            options["user_credentials"] = str(self.ctx.resolve_path(cfg.creds_file))
        if cfg.tls is not None:
            options["tls"] = self._tls_context(cfg.tls)
        try:
            nc = await asyncio.wait_for(
                nats.connect(**options), cfg.connect_timeout * (len(cfg.servers) + 1) + 5
            )
        except TimeoutError:
            raise DeliveryError(
                f"no NATS server answered within {cfg.connect_timeout:g} s ({self._where()})",
                retryable=True,
            ) from None
        except nats.errors.NoServersError:
            reason = _reason(last_error[-1], cfg.connect_timeout) if last_error else "no server answered"
            raise DeliveryError(
                f"cannot connect to NATS ({self._where()}): {reason}", retryable=True
            ) from None
        except Exception as exc:
            text = one_line_error(exc, 200)
            auth = "authorization" in text.lower() or "authentication" in text.lower()
            raise DeliveryError(
                f"cannot connect to NATS ({self._where()}): {text}"
                + (" (check user/password, token or creds_file)" if auth else ""),
                retryable=not auth and not isinstance(exc, ImportError | FileNotFoundError),
            ) from None
        js = nc.jetstream(timeout=cfg.ack_timeout)
        acks = _Acks(cfg.max_in_flight)
        inbox = nc.new_inbox()
        try:
            if cfg.stream:
                await self._ensure_stream(js)
            await nc.subscribe(inbox + ".*", cb=acks.on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1)
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        self._nc, self._js, self._closed, self._acks, self._inbox = nc, js, closed, acks, inbox

    def _tls_context(self, tls: NatsTls) -> Any:
        import ssl

        try:
            context = ssl.create_default_context(
                cafile=str(self.ctx.resolve_path(tls.ca_file)) if tls.ca_file else None
            )
            if tls.cert_file and tls.key_file:
                context.load_cert_chain(
                    str(self.ctx.resolve_path(tls.cert_file)), str(self.ctx.resolve_path(tls.key_file))
                )
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(
                f"tls: cannot use the certificate files: {one_line_error(exc, 200)}", retryable=False
            ) from None
        return context

    async def _ensure_stream(self, js: Any) -> None:
        import nats.errors
        import nats.js.api
        import nats.js.errors

        cfg = self.config
        assert cfg.stream is not None
        try:
            await js.stream_info(cfg.stream)
            return
        except nats.js.errors.NotFoundError:
            pass
        except (
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
            nats.errors.TimeoutError,
        ):
            raise DeliveryError(
                f"JetStream does not answer on {self._where()} (is JetStream enabled?)",
                retryable=True,
            ) from None
        if not cfg.create_stream:
            raise DeliveryError(
                f"stream '{cfg.stream}' does not exist on {self._where()} "
                "(create it, or set create_stream: true)",
                retryable=False,
            )
        subjects = cfg.stream_subjects or default_stream_subjects(cfg.subject) or []
        stream = nats.js.api.StreamConfig(
            name=cfg.stream,
            subjects=subjects,
            storage=nats.js.api.StorageType.FILE,
            num_replicas=cfg.replicas,
            duplicate_window=cfg.duplicate_window_s,
            max_age=cfg.max_age_s,
        )
        try:
            await js.add_stream(stream)
        except nats.js.errors.APIError as exc:
            raise DeliveryError(
                f"cannot create stream '{cfg.stream}' with subjects {', '.join(subjects)}: "
                f"{exc.description or exc}",
                retryable=exc.code is not None and exc.code >= 500,
            ) from None
        self.ctx.log(
            "info",
            f"created JetStream stream '{cfg.stream}' (subjects {', '.join(subjects)}, "
            f"duplicate window {cfg.duplicate_window_s:g} s)",
            self.name,
        )

    def _drop(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and self._loop is not None:
            with contextlib.suppress(BaseException):
                self._loop.run(nc.close(), 5)

    # --- messages ------------------------------------------------------------------------------

    def _fixed_fields(self) -> dict[str, str]:
        if self._fixed is None:
            fixed = {"pipeline": self.ctx.pipeline, "destination": self.name}
            if "{edge}" in self.config.subject:
                from engine.outbox.keys import edge_id

                fixed["edge"] = edge_id(self.ctx.data_dir)
            self._fixed = fixed
        return self._fixed

    def _messages(self, table: pa.Table, historical: bool) -> list[tuple[str, bytes, dict[str, str]]]:
        """(subject, payload, headers) of every message of a delivery: built column-wise."""
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        try:
            subject = subject_expr(self.config.subject, frame.columns, self._fixed_fields())
        except ValueError as exc:
            raise DeliveryError(f"{exc}", retryable=False) from None
        extra = {HISTORICAL_HEADER: "true"} if historical else {}
        if self.config.stream:
            extra["Nats-Expected-Stream"] = self.config.stream
        max_payload = self._nc.max_payload if self._nc is not None else 1024 * 1024
        if self.config.message == "record":
            payloads = json_lines(json_frame(frame))
            keys = frame.get_column(KEY_COLUMN).to_list()
            if isinstance(subject, str):
                subjects: list[str] = [subject] * len(keys)
            else:
                subjects = frame.select(subject.alias("s")).get_column("s").to_list()
            out = []
            for subj, data, key in zip(subjects, payloads, keys, strict=True):
                if len(data) > max_payload:
                    raise DeliveryError(
                        f"record '{key}' is {len(data)} bytes as JSON; "
                        f"the server takes at most {max_payload} (max_payload)",
                        retryable=False,
                    )
                out.append((subj, data, {"Nats-Msg-Id": _msg_id(key), **extra}))
            return out
        # message: batch -- one subject's rows together, in order, cut to batch_rows and max_payload
        if isinstance(subject, str):
            groups = [(subject, frame)]
        else:
            frame = frame.with_columns(subject.alias("__subject"))
            groups = [
                (str(part.get_column("__subject")[0]), part.drop("__subject"))
                for part in frame.partition_by("__subject", maintain_order=True)
            ]
        out = []
        for subj, part in groups:
            for start in range(0, part.height, self.config.batch_rows):
                for chunk in self._fit(part.slice(start, self.config.batch_rows), max_payload):
                    data, content_type = chunk
                    out.append(
                        (subj, data[0], {"Nats-Msg-Id": data[1], "Content-Type": content_type, **extra})
                    )
        return out

    def _fit(self, chunk: pl.DataFrame, max_payload: int) -> list[tuple[tuple[bytes, str], str]]:
        """A batch's body (and id), halved until it fits `max_payload`."""
        if self.config.batch_format == "arrow":
            sink = io.BytesIO()
            chunk.write_ipc_stream(sink)
            body, content_type = sink.getvalue(), "application/vnd.apache.arrow.stream"
        else:
            body, content_type = json_frame(chunk).write_json().encode(), "application/json"
        if len(body) > max_payload:
            if chunk.height == 1:
                raise DeliveryError(
                    f"record '{chunk.get_column(KEY_COLUMN)[0]}' is {len(body)} bytes; "
                    f"the server takes at most {max_payload} (max_payload)",
                    retryable=False,
                )
            half = chunk.height // 2
            return self._fit(chunk.slice(0, half), max_payload) + self._fit(chunk.slice(half), max_payload)
        msg_id = "batch-" + keys_digest(chunk.get_column(KEY_COLUMN))
        return [((body, msg_id), content_type)]

    # --- publishing ----------------------------------------------------------------------------

    async def _publish(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
        """Send every message with a reply subject of its own under the connection's ack inbox,
        keeping at most `max_in_flight` unacknowledged, then wait until every ack is in. Waiting
        for room or for the last acks is bounded by `ack_timeout` each time (no progress that
        long: the link is taken as dead). nats-py's `publish_async` does the same with a future,
        a random token and a parsed PubAck per message; this costs about half as much per message."""
        import nats.errors

        nc, acks, closed = self._nc, self._acks, self._closed
        assert nc is not None and acks is not None and closed is not None
        acks.begin()
        prefix = f"{self._inbox}.{acks.generation}_"
        limit = self.config.max_in_flight
        publish = nc.publish
        sent = 0
        try:
            for subject, data, headers in messages:
                if acks.error is not None:
                    break
                if len(acks.pending) >= limit:
                    acks.room.clear()
                    await self._wait(acks.room, closed, sent, len(messages))
                token = str(sent)
                acks.pending.add(token)
                await publish(subject, data, reply=prefix + token, headers=headers)
                sent += 1
            if acks.pending and acks.error is None:
                # `drained` may have been set by a moment mid-way when every ack sent so far was in
                acks.drained.clear()
                await self._wait(acks.drained, closed, sent, len(messages))
        except DeliveryError:
            raise
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError, OSError) as exc:
            raise DeliveryError(
                f"the connection to NATS was lost after {sent} of {len(messages)} messages "
                f"({one_line_error(exc, 200)})",
                retryable=True,
            ) from None
        finally:
            self.acked += acks.new
            self.duplicates += acks.duplicates
            acks.end()
        if acks.error is not None:
            raise self._publish_error(*acks.error)

    async def _wait(self, event: asyncio.Event, closed: asyncio.Event, sent: int, total: int) -> None:
        """Wait for `event` (room for more, or every ack in), at most `ack_timeout`."""
        waiting = asyncio.ensure_future(event.wait())
        closing = asyncio.ensure_future(closed.wait())
        try:
            await asyncio.wait(
                {waiting, closing}, timeout=self.config.ack_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiting.cancel()
            closing.cancel()
        if event.is_set() or (self._acks is not None and self._acks.error is not None):
            return
        unacked = len(self._acks.pending) if self._acks is not None else sent
        if closed.is_set():
            raise DeliveryError(
                f"the connection to NATS closed with {unacked} of {total} messages unacknowledged",
                retryable=True,
            )
        raise DeliveryError(
            f"no ack from JetStream within {self.config.ack_timeout:g} s for {unacked} of "
            f"{total} messages ({sent} sent)",
            retryable=True,
        )

    def _publish_error(self, status: str | None, code: int, text: str) -> DeliveryError:
        subject_hint = self.config.subject
        if status == "503":  # no responders: no stream listens on the subject
            if self.config.stream:
                return DeliveryError(
                    f"no JetStream stream answered for subject {subject_hint} (is stream "
                    f"'{self.config.stream}' capturing it, and does it have a leader?)",
                    retryable=True,
                )
            return DeliveryError(
                f"no JetStream stream captures subject {subject_hint} on {self._where()} "
                "(create one, or set stream and create_stream: true)",
                retryable=False,
            )
        if status is not None:
            return DeliveryError(f"JetStream answered status {status} {text}".rstrip(), retryable=True)
        return DeliveryError(
            f"JetStream refused a message ({code}: {text})",
            retryable=code >= 500 or code == 0 or code == 408,
        )


class _Acks:
    """The acks of the delivery in flight, filled by the ack inbox's callback. A delivery has a
    generation of its own in its reply subjects: a late ack of an abandoned one is ignored."""

    def __init__(self, limit: int):
        self.limit = limit
        self.generation = 0
        self.pending: set[str] = set()
        self.room = asyncio.Event()
        self.drained = asyncio.Event()
        self.error: tuple[str | None, int, str] | None = None  # (status header, code, description)
        self.new = self.duplicates = 0
        self._prefix = ""

    def begin(self) -> None:
        self.generation += 1
        self._prefix = f"{self.generation}_"
        self.pending.clear()
        self.room.set()
        self.drained.clear()
        self.error = None
        self.new = self.duplicates = 0

    def end(self) -> None:
        self.pending.clear()
        self._prefix = ""

    async def on_ack(self, msg: Any) -> None:
        token = msg.subject.rpartition(".")[2]
        if not self._prefix or not token.startswith(self._prefix):
            return  # an ack for an earlier delivery
        token = token[len(self._prefix) :]
        if token not in self.pending:
            return
        self.pending.discard(token)
        data = msg.data
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None and not data:
            self.error = self.error or (status, 0, msg.headers.get("Description", ""))
        elif b'"error"' in data:
            try:
                err = json.loads(data).get("error") or {}
            except ValueError:
                err = {}
            self.error = self.error or (
                None,
                int(err.get("code") or 0),
                str(err.get("description") or data[:200]),
            )
        elif b'"duplicate"' in data and _DUPLICATE.search(data):
            self.duplicates += 1
        else:
            self.new += 1
        if len(self.pending) <= self.limit // 2:
            self.room.set()
        if not self.pending or self.error is not None:
            self.drained.set()
            self.room.set()


@register
class NatsConnector(RemoteConnector):
    connector_type = "nats"
    title = "NATS (core and JetStream)"
    SourceConfig: ClassVar[type[NatsSourceConfig]] = NatsSourceConfig
    SinkConfig: ClassVar[type[NatsSinkConfig]] = NatsSinkConfig

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> StreamingSource:
        """The source: core subjects or a JetStream durable consumer (engine/connectors/nats_source.py)."""
        from engine.connectors.nats_source import NatsSource

        assert isinstance(config, NatsSourceConfig)
        return NatsSource(config, ctx, name)

    Target = NatsTarget
