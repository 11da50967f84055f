"""The `webhook` destination: batches of JSON records sent to a REST endpoint (issue 11).

The contract with the receiver (docs/upstream-nats-webhook.md):

- one request per batch of at most `batch_rows` records, `method` (POST or PUT) to `url`, with
  `Content-Type: application/json` and the body `{"idempotency_key": K, "historical": false,
  "count": N, "records": [{..., "_key": "..."}, ...]}`;
- the header `Idempotency-Key: K`, where K is derived from the keys of the batch's records (a
  SHA-256 of them): the same rows give the same K on every retry, restart or redelivery, so the
  receiver drops a request whose K it has already stored; every record also carries its own `_key`
  for receivers that dedupe per record (a batch split differently after a poison record gets a new
  K, but its records keep their keys);
- 2xx: delivered. 408, 425, 429, 5xx, and no answer (refused, reset, timed out): retryable, and a
  `Retry-After` (seconds or an HTTP date) says when to try again. 401, 403, 404, 405 and 407 say
  the url, method or credentials are wrong, not the data: retryable too (the link shows down with
  the answer; nothing goes to quarantine). Any other answer (another 4xx, a redirect): the receiver
  refused the data itself, non-retryable (the forwarder bisects the batch and quarantines the
  record(s) it keeps refusing).

The JSON shape is shared with the NATS destination (`json_frame`): timestamps as ISO 8601 (UTC with
`Z` when the column has a time zone), bytes as base64, NaN as null; built column-wise by Polars, not
record by record.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Literal

import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator

from engine.connectors.base import one_line_error
from engine.connectors.registry import register
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.limits import shorten
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.connector import RemoteConnector
from engine.outbox.target import KEY_COLUMN, DeliveryError

if TYPE_CHECKING:
    import httpx


RETRYABLE_STATUS = frozenset({408, 425, 429})
# The endpoint or the credentials are wrong, not the data: retried (the link shows down with the
# answer) rather than sending every record to quarantine until someone renews a token.
CONFIG_STATUS = frozenset({401, 403, 404, 405, 407})
MAX_RETRY_AFTER_S = 3600.0  # a Retry-After further away than this is capped (a broken clock upstream)


# --- JSON, shared with the NATS destination ---------------------------------------------------


def json_frame(table: pa.Table | pl.DataFrame) -> pl.DataFrame:
    """`table` as a frame whose columns Polars writes as plain JSON: datetimes as ISO 8601 text
    (`...Z` for zoned columns, which are converted to UTC), binary as base64, durations as
    microseconds, NaN as null."""
    frame = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    changes: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone:
                expr = col.dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
            else:
                expr = col.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f")
        elif dtype == pl.Binary:
            expr = col.bin.encode("base64")
        elif isinstance(dtype, pl.Duration):
            expr = col.dt.total_microseconds()
        elif dtype in (pl.Float32, pl.Float64):
            expr = col.fill_nan(None)
        else:
            continue
        changes.append(expr.alias(name))
    return frame.with_columns(changes) if changes else frame


def json_array(frame: pl.DataFrame) -> bytes:
    """The rows of a `json_frame` as one JSON array (`[{...},{...}]`)."""
    return frame.write_json().encode()


def json_lines(frame: pl.DataFrame) -> list[bytes]:
    """The rows of a `json_frame` as one JSON object each (a JSON string never holds a raw
    newline, so splitting Polars' NDJSON on newlines is exact)."""
    if frame.height == 0:
        return []
    return frame.write_ndjson().encode().split(b"\n")[: frame.height]


def keys_digest(keys: pa.ChunkedArray | pa.Array | pl.Series) -> str:
    """SHA-256 (hex) of a batch's record keys, in order: the same rows give the same digest."""
    values = keys.to_list() if isinstance(keys, pl.Series) else keys.to_pylist()
    digest = hashlib.sha256()
    digest.update(str(len(values)).encode())
    for value in values:
        digest.update(b"\n")
        digest.update((value or "").encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds from now: delta-seconds or an HTTP date; None when absent or
    unreadable; never negative, capped at an hour."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        seconds = (when - current).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


# --- the destination ----------------------------------------------------------------------------


def http_url(value: str) -> str:
    """A config's `url`: http or https only (a one-line error otherwise)."""
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("url must start with http:// or https://")
    return value


class WebhookSinkConfig(RemoteSinkConfig):
    url: str = Field(..., description="the receiver's address (http:// or https://)")
    method: Literal["POST", "PUT"] = Field("POST", description="POST or PUT")
    headers: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description='extra request headers; a value may be {"secret": "NAME"} (e.g. Authorization)',
    )
    batch_rows: int = Field(1000, ge=1, le=100_000, description="records per request, at most")
    timeout: float = Field(
        10.0, gt=0, le=600, description="seconds to wait for the connection, and for each read or write"
    )
    verify_tls: bool = Field(True, description="check the receiver's TLS certificate (https)")

    _http_url = field_validator("url")(classmethod(lambda cls, value: http_url(value)))

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in ("idempotency-key", "content-type", "content-length"):
                raise ValueError(f"header '{name}' is set by the destination itself")
        return value


def _safe_url(url: str) -> str:
    """The URL without a user:password part or a query string (which may hold a token)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class WebhookTarget:
    """An `UpstreamTarget` for an HTTP receiver (engine/outbox/target.py)."""

    def __init__(self, config: WebhookSinkConfig, ctx: RunContext, name: str):
        self.config, self.ctx, self.name = config, ctx, name
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self.requests = 0  # requests answered 2xx (for tests and statistics)

    # --- the contract ------------------------------------------------------------------------

    def open(self) -> None:
        if self._client is None:
            import httpx

            timeout = self.config.timeout
            self._client = httpx.Client(
                timeout=httpx.Timeout(timeout, connect=timeout, pool=timeout),
                verify=self.config.verify_tls,
                follow_redirects=False,
                trust_env=False,  # offline edge box: no proxy from the environment
            )

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        if table.num_rows == 0:
            return
        if KEY_COLUMN not in table.column_names:
            raise DeliveryError(f"the data has no '{KEY_COLUMN}' column", retryable=False)
        with self._lock:
            self.open()
            frame = json_frame(table)
            step = self.config.batch_rows
            for start in range(0, frame.height, step):
                self._send(frame.slice(start, step), historical)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # close never raises
                client.close()

    def check(self) -> None:
        """Reach the receiver (any HTTP answer counts: the endpoint may refuse a bare HEAD)."""
        import httpx

        try:
            with httpx.Client(
                timeout=self.config.timeout, verify=self.config.verify_tls, trust_env=False
            ) as client:
                client.request("HEAD", self.config.url, headers=self.config.headers)
        except httpx.HTTPError as exc:
            raise ConnectorError(
                f"cannot reach {_safe_url(self.config.url)}: {_http_reason(exc, self.config.timeout)}"
            ) from None

    def describe_target(self) -> str:
        return f"{self.config.method} {_safe_url(self.config.url)}"

    # --- one request -------------------------------------------------------------------------

    def _send(self, chunk: pl.DataFrame, historical: bool) -> None:
        import httpx

        assert self._client is not None
        key = keys_digest(chunk.get_column(KEY_COLUMN))
        body = b"".join(
            (
                b'{"idempotency_key":"',
                key.encode(),
                b'","historical":',
                b"true" if historical else b"false",
                b',"count":',
                str(chunk.height).encode(),
                b',"records":',
                json_array(chunk),
                b"}",
            )
        )
        headers = {**self.config.headers, "Content-Type": "application/json", "Idempotency-Key": key}
        where = f"{self.config.method} {_safe_url(self.config.url)}"
        try:
            response = self._client.request(
                self.config.method, self.config.url, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            self.close()  # a connection in an unknown state is not reused
            raise DeliveryError(
                f"{where}: {_http_reason(exc, self.config.timeout)}", retryable=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            self.requests += 1
            return
        detail = shorten(" ".join(response.text.split()), 200) if response.content else ""
        text = f"{where}: HTTP {status} {response.reason_phrase}".rstrip() + (f": {detail}" if detail else "")
        if status in CONFIG_STATUS:
            raise DeliveryError(text + " (check url, method and headers)", retryable=True)
        if status in RETRYABLE_STATUS or status >= 500:
            raise DeliveryError(
                text, retryable=True, retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        if 300 <= status < 400:
            location = response.headers.get("Location")
            text += (
                f" (redirected to {_safe_url(location)}; set url to the final address)" if location else ""
            )
        raise DeliveryError(text, retryable=False)


def _http_reason(exc: BaseException, timeout: float) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__cause__ or exc.__context__
        text = str(exc) or (one_line_error(cause) if cause else "")
        if "refused" in text.lower():
            return "connection refused"
        return f"cannot connect ({shorten(text, 200)})" if text else "cannot connect"
    return one_line_error(exc, 200)


@register
class WebhookConnector(RemoteConnector):
    connector_type = "webhook"
    title = "REST webhook"
    SinkConfig: ClassVar[type[WebhookSinkConfig]] = WebhookSinkConfig

    Target = WebhookTarget
