"""The `rest_api` connector (issue 13 item 2): records from a REST API, and batches of JSON to one.

Source
- One request per page: `method` to `url` + `endpoint` with `params`, `headers` and a JSON `body`.
  The records are the body itself (a JSON array) or what `records_path` picks out of it.
- `records_path` is a small JSONPath subset (see `parse_path`): `$`, `.name`, `['name']`, `[3]`,
  `[*]` and `.*`, e.g. `$.data.items`, `$.results[*]`, `$['odd key'][0].rows`. Without a wildcard the
  value found is the records (a list), or one record (an object); with one, every value found is
  a record. No filters, slices or recursive descent.
- `pagination` (`page`, `offset`, `cursor`, `link_header`, `next_url`) stops on an empty page, a
  short page (page and offset, when the page size is known) or when there is no next cursor/link.
  Page and offset pages are fetched `concurrency` at a time (they do not depend on each other);
  pages past the last one are thrown away, so the records come in page order.
- Pages become Polars frames (`pl.from_dicts` over the decoded page); frames are concatenated into
  batches of up to `batch_rows` records.

Resilience
- `retry_attempts` more tries after the first, waiting the one shared back-off
  (engine/runs/retry.py) from `retry_backoff` seconds, on no answer (refused, reset, timed out),
  408, 425, 429 and 5xx; a 429 or 503 with `Retry-After` waits what it says instead.
- `rate_limit` requests per `rate_limit_period` seconds: a client-side sliding window shared by
  every request of the connector (the concurrent page fetches and the OAuth token requests too).
- 401/403: an `AuthError`, one line with the status and the URL (no query string, no token), never
  retried (exit 1; the run writes nothing since its source failed before any commit).
- OAuth2 client credentials: the token is fetched from `token_url`, cached per (token_url,
  client_id, scopes, secret) for the process and refreshed `refresh_margin` seconds before it
  expires (and once more if the API answers 401 to a token it took).

Destination
- The run's rows are spooled to a temporary Arrow file while the run goes on; at commit (`close()`)
  they are sent as JSON arrays of at most `batch_rows` records, `method` POST or PUT, each request
  with an `Idempotency-Key` header (SHA-256 of its body), retried as above. A run that fails
  before its commit sends nothing. HTTP has no transaction: if a request fails for good during the
  commit, the batches before it were delivered, the error says how many records, and a rerun sends
  them again with the same keys (a receiver that honours `Idempotency-Key` drops them).
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import contextlib
import functools
import hashlib
import json
import os
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import polars as pl
from pydantic import Field, PrivateAttr, field_validator, model_validator

from engine.connectors.base import (
    DEFAULT_BATCH_ROWS,
    Connector,
    ConnectorConfig,
    Sink,
    Source,
)
from engine.connectors.registry import register
from engine.connectors.webhook import _http_reason, _safe_url, http_url, parse_retry_after
from engine.errors import AggregatorError, ConnectorError, DataError, RunCancelled, first_line
from engine.limits import shorten
from engine.runs.retry import backoff_delays

SECRET_MASK = "<secret>"  # what validation sees for a {"secret": NAME} (engine/spec/plan.py)
RETRY_STATUS = frozenset({408, 425, 429})
AUTH_STATUS = frozenset({401, 403})
SENSITIVE_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|cookie|password", re.IGNORECASE)


class AuthError(AggregatorError):
    """The API refused the credentials (401/403): a configuration problem, never retried."""


# --- the JSONPath subset --------------------------------------------------------------------

Step = tuple[str, Any]  # ("key", name) | ("index", n) | ("all", None)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def parse_path(text: str) -> tuple[Step, ...]:
    """`$.data.items` -> (("key", "data"), ("key", "items")). Raises ValueError saying where."""
    text = text.strip()
    if not text.startswith("$"):
        raise ValueError(f"records path '{_shown(text)}' must start with $ (e.g. $.data.items)")
    steps: list[Step] = []
    i, n = 1, len(text)
    while i < n:
        c = text[i]
        if c == ".":
            if text.startswith("..", i):
                raise ValueError(f"records path '{_shown(text)}': recursive descent (..) is not supported")
            if i + 1 < n and text[i + 1] == "*":
                steps.append(("all", None))
                i += 2
                continue
            m = _NAME.match(text, i + 1)
            if not m:
                raise ValueError(f"records path '{_shown(text)}': a name must follow '.' at position {i + 1}")
            steps.append(("key", m.group()))
            i = m.end()
        elif c == "[":
            close = _bracket_end(text, i)
            inner = text[i + 1 : close].strip()
            if inner == "*":
                steps.append(("all", None))
            elif re.fullmatch(r"-?\d+", inner):
                steps.append(("index", int(inner)))
            elif len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                steps.append(("key", _unquote(inner, text)))
            else:
                raise ValueError(
                    f"records path '{_shown(text)}': [{_shown(inner)}] is not supported (allowed: [n], [*], ['name'])"
                )
            i = close + 1
        else:
            raise ValueError(f"records path '{_shown(text)}': unexpected '{_shown(c)}' at position {i}")
    return tuple(steps)


def _shown(text: str) -> str:
    """`text` for a one-line message: control characters escaped, cut short."""
    return shorten(repr(text)[1:-1], 80)


def _bracket_end(text: str, start: int) -> int:
    i, quote = start + 1, None
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "]":
            return i
        i += 1
    raise ValueError(f"records path '{_shown(text)}': '[' at position {start} is never closed")


def _unquote(inner: str, text: str) -> str:
    body = inner[1:-1]
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
            continue
        if c == inner[0]:
            raise ValueError(f"records path '{_shown(text)}': unescaped quote inside ['...']")
        out.append(c)
        i += 1
    return "".join(out)


def format_path(steps: tuple[Step, ...]) -> str:
    """The canonical text of parsed steps (`parse_path(format_path(s)) == s`)."""
    out = "$"
    for kind, arg in steps:
        if kind == "all":
            out += "[*]"
        elif kind == "index":
            out += f"[{arg}]"
        elif _NAME.fullmatch(arg):
            out += f".{arg}"
        else:
            out += "['" + arg.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return out


def select(doc: Any, steps: tuple[Step, ...]) -> list[Any]:
    """Every value `steps` reach in `doc` (missing keys and indexes reach nothing)."""
    current = [doc]
    for kind, arg in steps:
        found: list[Any] = []
        for value in current:
            if kind == "key":
                if isinstance(value, dict) and arg in value:
                    found.append(value[arg])
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    found.append(value[arg])
            elif isinstance(value, list):
                found.extend(value)
            elif isinstance(value, dict):
                found.extend(value.values())
        current = found
    return current


def records_at(doc: Any, steps: tuple[Step, ...] | None) -> list[Any]:
    """The records of a page: with a wildcard every value reached; else the list reached (an
    object reached is one record; nothing or null reached is no record)."""
    if steps is None:
        steps = ()
    values = select(doc, steps)
    if any(kind == "all" for kind, _ in steps):
        return [v for v in values if v is not None]
    if not values or values[0] is None:
        return []
    value = values[0]
    return value if isinstance(value, list) else [value]


def first_value(doc: Any, steps: tuple[Step, ...]) -> Any:
    values = select(doc, steps)
    return values[0] if values else None


# --- RFC 8288 Link header -------------------------------------------------------------------


def parse_link_header(value: str | None) -> dict[str, str]:
    """`<url>; rel="next", <url2>; rel="prev last"` -> {"next": url, "prev": url2, "last": url2}.
    The first link of a relation wins; relation names are case-insensitive."""
    links: dict[str, str] = {}
    if not value:
        return links
    i, n = 0, len(value)
    while i < n:
        start = value.find("<", i)
        if start < 0:
            break
        end = value.find(">", start)
        if end < 0:
            break
        url = value[start + 1 : end].strip()
        i = end + 1
        params: dict[str, str] = {}
        while i < n:  # ; name=value ; name="quoted, value" ... up to the next comma outside quotes
            while i < n and value[i] in " \t":
                i += 1
            if i >= n or value[i] == ",":
                i += 1
                break
            if value[i] != ";":
                nxt = value.find(",", i)
                i = n if nxt < 0 else nxt + 1
                break
            i += 1
            m = re.compile(r"\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*").match(value, i)
            if not m:
                continue
            name = m.group(1).lower()
            i = m.end()
            val = ""
            if i < n and value[i] == "=":
                i += 1
                while i < n and value[i] in " \t":
                    i += 1
                if i < n and value[i] == '"':
                    i += 1
                    chars = []
                    while i < n and value[i] != '"':
                        if value[i] == "\\" and i + 1 < n:
                            i += 1
                        chars.append(value[i])
                        i += 1
                    i += 1
                    val = "".join(chars)
                else:
                    m2 = re.compile(r"[^;,\s]*").match(value, i)
                    assert m2 is not None
                    val = m2.group()
                    i = m2.end()
            params.setdefault(name, val)
        for rel in params.get("rel", "").split():
            links.setdefault(rel.lower(), url)
    return links


# --- configuration ---------------------------------------------------------------------------


class AuthParams(ConnectorConfig):
    username: str | None = Field(None, description="basic: the user name")
    password: str | None = Field(None, repr=False, description='basic: the password ({"secret": NAME})')
    token: str | None = Field(None, repr=False, description='bearer_token: the token ({"secret": NAME})')
    header: str | None = Field(None, description="api_key: the header that carries the key, e.g. X-API-Key")
    query_param: str | None = Field(None, description="api_key: or the query parameter that carries it")
    api_key: str | None = Field(None, repr=False, description='api_key: the key ({"secret": NAME})')
    prefix: str | None = Field(None, description="api_key in a header: text before the key, e.g. `Token `")
    token_url: str | None = Field(None, description="oauth2_client_credentials: the token endpoint")
    client_id: str | None = Field(None, description="oauth2_client_credentials: the client id")
    client_secret: str | None = Field(
        None, repr=False, description='oauth2_client_credentials: the client secret ({"secret": NAME})'
    )
    scopes: list[str] | str | None = Field(None, description="oauth2: scopes (a list, or space-separated)")
    audience: str | None = Field(
        None, description="oauth2: an `audience` form field, if the server wants one"
    )
    client_auth: Literal["body", "basic"] = Field(
        "body", description="oauth2: send the client id and secret in the form body or as HTTP basic"
    )
    refresh_margin: float = Field(
        60.0, ge=0, le=3600, description="oauth2: refresh the token this many seconds before it expires"
    )


_AUTH_NEEDS = {
    "basic": ("username", "password"),
    "bearer_token": ("token",),
    "api_key": ("api_key",),
    "oauth2_client_credentials": ("token_url", "client_id", "client_secret"),
}
_SECRET_PARAMS = ("password", "token", "api_key", "client_secret")


class PagePagination(ConnectorConfig):
    type: Literal["page"]
    page_param: str = Field("page", description="query parameter holding the page number")
    size_param: str | None = Field(None, description="query parameter holding the page size")
    size: int | None = Field(None, ge=1, description="records per page (a shorter page is the last)")
    start: int = Field(1, description="the first page's number")


class OffsetPagination(ConnectorConfig):
    type: Literal["offset"]
    offset_param: str = Field("offset", description="query parameter holding the offset")
    limit_param: str = Field("limit", description="query parameter holding the page size")
    limit: int = Field(100, ge=1, description="records per page (a shorter page is the last)")
    start: int = Field(0, ge=0, description="the first offset")


class CursorPagination(ConnectorConfig):
    type: Literal["cursor"]
    cursor_param: str = Field("cursor", description="query parameter that sends the cursor back")
    cursor_path: str = Field(description="JSONPath of the next cursor in the body, e.g. $.meta.next_cursor")

    @field_validator("cursor_path")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_path(value)
        return value


class LinkHeaderPagination(ConnectorConfig):
    type: Literal["link_header"]


class NextUrlPagination(ConnectorConfig):
    type: Literal["next_url"]
    next_url_path: str = Field(description="JSONPath of the next page's URL in the body, e.g. $.next")

    @field_validator("next_url_path")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_path(value)
        return value


Pagination = Annotated[
    PagePagination | OffsetPagination | CursorPagination | LinkHeaderPagination | NextUrlPagination,
    Field(discriminator="type"),
]
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


class _RestConfig(ConnectorConfig):
    url: str = Field(description="the API's base address (http:// or https://)")
    endpoint: str = Field("", description="path appended to url, e.g. /v1/work-orders")
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description='extra headers; a value may be {"secret": NAME}'
    )
    auth_method: Literal["none", "basic", "bearer_token", "api_key", "oauth2_client_credentials"] = "none"
    auth_params: AuthParams = Field(default_factory=AuthParams)
    connection_timeout: float = Field(30.0, gt=0, le=600, description="seconds to connect, and per read")
    retry_attempts: int = Field(3, ge=0, le=20, description="more tries after the first, on errors worth it")
    retry_backoff: float = Field(1.0, ge=0, le=300, description="seconds before the first retry (then x2)")
    retry_max_delay: float = Field(60.0, ge=0, le=3600, description="the longest wait between tries")
    rate_limit: float | None = Field(None, gt=0, description="at most this many requests per period")
    rate_limit_period: float | Literal["second", "minute", "hour", "day"] = Field(
        1.0, description="the rate limit's period: seconds, or second/minute/hour/day"
    )
    verify_tls: bool = Field(True, description="check the server's TLS certificate (https)")

    _clear: list[str] = PrivateAttr(default_factory=list)

    _http_url = field_validator("url")(classmethod(lambda cls, value: http_url(value)))

    @field_validator("rate_limit_period")
    @classmethod
    def _period(cls, value: Any) -> Any:
        if isinstance(value, int | float) and value <= 0:
            raise ValueError("rate_limit_period must be more than 0 seconds")
        return value

    @model_validator(mode="after")
    def _auth_complete(self):
        needed = _AUTH_NEEDS.get(self.auth_method, ())
        missing = [k for k in needed if getattr(self.auth_params, k) in (None, "")]
        if missing:
            raise ValueError(
                f"auth_method {self.auth_method} needs auth_params.{', auth_params.'.join(missing)}"
            )
        if self.auth_method == "api_key" and not (self.auth_params.header or self.auth_params.query_param):
            raise ValueError("auth_method api_key needs auth_params.header or auth_params.query_param")
        clear = [
            f"auth_params.{k}"
            for k in _SECRET_PARAMS
            if getattr(self.auth_params, k) not in (None, "", SECRET_MASK)
        ]
        clear += [
            f"headers.{k}" for k, v in self.headers.items() if SENSITIVE_HEADER.search(k) and v != SECRET_MASK
        ]
        self._clear = clear
        return self

    @property
    def full_url(self) -> str:
        if not self.endpoint:
            return self.url
        return self.url.rstrip("/") + "/" + self.endpoint.lstrip("/")

    @property
    def period_seconds(self) -> float:
        p = self.rate_limit_period
        return _PERIODS[p] if isinstance(p, str) else float(p)

    def clear_secrets(self) -> list[str]:
        """Where a secret is given in clear text (it works; validation and every run warn)."""
        return list(self._clear)


class RestApiSourceConfig(_RestConfig):
    method: Literal["GET", "POST"] = Field("GET", description="GET, or POST for search endpoints")
    params: dict[str, Any] = Field(default_factory=dict, description="query parameters")
    body: Any = Field(None, description="a JSON body (POST)")
    records_path: str | None = Field(
        None, description="JSONPath to the records (default: the body is the list)"
    )
    pagination: Pagination | None = None
    concurrency: int = Field(4, ge=1, le=32, description="page/offset pagination: pages fetched at once")
    max_pages: int | None = Field(None, ge=1, description="stop after this many pages")

    @field_validator("records_path")
    @classmethod
    def _records_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_path(value)
        return value


class RestApiSinkConfig(_RestConfig):
    method: Literal["POST", "PUT"] = Field("POST", description="POST or PUT")
    batch_rows: int = Field(1000, ge=1, le=100_000, description="records per request, at most")
    wrap: str | None = Field(
        None, description='send {"<wrap>": [records]} instead of a bare JSON array, e.g. "records"'
    )

    @field_validator("headers")
    @classmethod
    def _no_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in ("idempotency-key", "content-type", "content-length"):
                raise ValueError(f"header '{name}' is set by the destination itself")
        return value


# --- the HTTP client: auth, rate limit, retries ------------------------------------------------


class RateLimiter:
    """At most `rate` requests in any `period` seconds (a sliding window over start times)."""

    def __init__(self, rate: float | None, period: float):
        self.limit = max(1, int(rate)) if rate else 0
        self.period = period * (max(1, int(rate)) / rate) if rate else period  # 0.5 per s -> 1 per 2 s
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, pause: Callable[[float], None] = time.sleep) -> None:
        """Wait (through `pause`, which may raise to give up) until a request may start."""
        if not self.limit:
            return
        while True:
            with self._lock:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= self.period:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                wait = self.period - (now - self._starts[0])
            pause(wait)


@dataclass
class _Token:
    value: str
    expires_at: float  # monotonic; inf when the server gave no expires_in


_TOKENS: dict[str, _Token] = {}  # the process-wide OAuth token cache
_TOKENS_LOCK = threading.Lock()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for the process: loading the CA store costs ~65 ms, which a
    scheduled pipeline would otherwise pay on every run (and per client)."""
    return ssl.create_default_context()


class RestClient:
    """One httpx client with the connector's auth, rate limit and retries."""

    def __init__(self, config: _RestConfig, ctx: Any, name: str, role: str):
        import httpx

        self.config, self.ctx, self.name, self.role = config, ctx, name, role
        timeout = config.connection_timeout
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=timeout, pool=None),
            verify=_tls_context() if config.verify_tls else False,
            follow_redirects=True,
            trust_env=False,  # offline edge box: no proxy from the environment
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self.limiter = RateLimiter(config.rate_limit, config.period_seconds)
        self.requests = 0
        self._token_lock = threading.Lock()
        self.stopping = threading.Event()  # set by close(): waits between tries end at once

    def close(self) -> None:
        self.stopping.set()
        with contextlib.suppress(Exception):
            self.client.close()

    def pause(self, seconds: float) -> None:
        """Sleep; raise when the run is cancelled or the client closed meanwhile (checked every
        0.1 s), so that no thread keeps waiting out a back-off nobody needs."""
        cancel = getattr(self.ctx, "cancel", None)
        end = time.monotonic() + seconds
        while True:
            if cancel is not None and cancel.is_set():
                raise RunCancelled("run cancelled")
            if self.stopping.is_set():
                raise ConnectorError(f"{self.name}: stopped")
            left = end - time.monotonic()
            if left <= 0:
                return
            self.stopping.wait(min(left, 0.1))

    # ---- what goes with every request ----------------------------------------------------
    def _auth(self, headers: dict[str, str], params: dict[str, Any], fresh: bool = False) -> None:
        a, method = self.config.auth_params, self.config.auth_method
        if method == "basic":
            raw = f"{a.username}:{a.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif method == "bearer_token":
            headers["Authorization"] = f"Bearer {a.token}"
        elif method == "api_key":
            if a.header:
                headers[a.header] = f"{a.prefix or ''}{a.api_key}"
            else:
                params[a.query_param] = a.api_key
        elif method == "oauth2_client_credentials":
            headers["Authorization"] = f"Bearer {self.token(fresh)}"

    def _token_key(self) -> str:
        a = self.config.auth_params
        raw = json.dumps([a.token_url, a.client_id, a.scopes, a.audience, a.client_secret])
        return hashlib.sha256(raw.encode()).hexdigest()

    def token(self, fresh: bool = False) -> str:
        """The cached OAuth2 token, fetched again `refresh_margin` seconds before it expires."""
        key = self._token_key()
        margin = self.config.auth_params.refresh_margin
        with self._token_lock:
            with _TOKENS_LOCK:
                cached = _TOKENS.get(key)
            if cached and not fresh and time.monotonic() < cached.expires_at - margin:
                return cached.value
            token = self._fetch_token()
            with _TOKENS_LOCK:
                _TOKENS[key] = token
            return token.value

    def _fetch_token(self) -> _Token:
        a = self.config.auth_params
        assert a.token_url is not None
        form = {"grant_type": "client_credentials"}
        scopes = " ".join(a.scopes) if isinstance(a.scopes, list) else a.scopes
        if scopes:
            form["scope"] = scopes
        if a.audience:
            form["audience"] = a.audience
        headers = {"Accept": "application/json"}
        if a.client_auth == "basic":
            pair = f"{urllib.parse.quote(a.client_id or '')}:{urllib.parse.quote(a.client_secret or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": a.client_id or "", "client_secret": a.client_secret or ""}
        # RFC 6749 5.2: a refused client or grant is a 400 (invalid_grant, invalid_scope...) or 401
        response = self._send(
            "POST", a.token_url, None, headers, data=form, auth=False, refused={400, 401, 403}
        )
        where = f"POST {_safe_url(a.token_url)}"
        try:
            answer = response.json()
            value = answer["access_token"]
        except (ValueError, KeyError, TypeError):
            raise AuthError(
                f"{self.name}: {where}: the token endpoint's answer has no access_token"
            ) from None
        expires = answer.get("expires_in")
        try:
            expires_at = time.monotonic() + float(expires) if expires is not None else float("inf")
        except (TypeError, ValueError):
            expires_at = float("inf")
        return _Token(str(value), expires_at)

    # ---- one request, with retries -----------------------------------------------------------
    def request(self, method: str, url: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        headers = {"Accept": "application/json", **self.config.headers, **kwargs.pop("headers", {})}
        return self._send(method, url, params, headers, **kwargs)

    def _send(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        headers: dict[str, str],
        auth: bool = True,
        refused: frozenset[int] | set[int] = AUTH_STATUS,
        **kwargs: Any,
    ) -> Any:
        import httpx

        delays = backoff_delays(self.config.retry_backoff, 2.0, self.config.retry_max_delay, 0.1)
        where = f"{method} {_safe_url(url)}"
        refreshed = False
        attempt = 0
        while True:
            send_headers, send_params = dict(headers), dict(params or {})
            if auth:
                self._auth(send_headers, send_params)
            self.limiter.acquire(self.pause)
            wait: float | None = None
            try:
                response = self.client.request(
                    method, url, params=send_params or None, headers=send_headers, **kwargs
                )
            except httpx.HTTPError as exc:
                reason = _http_reason(exc, self.config.connection_timeout)
                if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
                    raise ConnectorError(f"{self.name}: {where}: {reason}") from None
            else:
                self.requests += 1
                status = response.status_code
                if status < 300:
                    return response
                if status in refused:
                    if auth and self.config.auth_method == "oauth2_client_credentials" and not refreshed:
                        refreshed = True  # the token may have been revoked: take a new one, once
                        self.token(fresh=True)
                        continue
                    hint = "check auth_method and auth_params"
                    if not auth:  # the token endpoint: its error code says which part is wrong
                        code = _oauth_error(response)
                        hint = (
                            f"{code}: " if code else ""
                        ) + "check token_url, client_id, client_secret, scopes"
                    raise AuthError(
                        f"{self.name}: {where}: HTTP {status} {response.reason_phrase} ({hint})".replace(
                            "  ", " "
                        )
                    )
                reason = f"HTTP {status} {response.reason_phrase}".rstrip()
                detail = shorten(" ".join(response.text.split()), 160) if response.content else ""
                if detail:
                    reason += f": {detail}"
                if status not in RETRY_STATUS and status < 500:
                    raise ConnectorError(f"{self.name}: {where}: {reason}")
                if status in (429, 503):
                    wait = parse_retry_after(response.headers.get("Retry-After"))
            attempt += 1
            if attempt > self.config.retry_attempts:
                tries = f" (after {attempt} tries)" if attempt > 1 else ""
                raise ConnectorError(f"{self.name}: {where}: {reason}{tries}")
            delay = next(delays)
            if wait is not None:
                delay = wait
            self.ctx.log(
                "warning",
                f"retry {attempt}/{self.config.retry_attempts} in {delay:.3g} s: {where}: {reason}",
                self.name,
            )
            self.pause(delay)


def _oauth_error(response: Any) -> str | None:
    """The `error` code of an OAuth2 error answer (RFC 6749 5.2: `invalid_client`...), if any."""
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,40}", code) else None


def _warn_clear(config: _RestConfig, ctx: Any, name: str) -> None:
    clear = config.clear_secrets()
    if clear:
        ctx.log(
            "warning",
            f"{', '.join(clear)} given in clear text: store it as a secret and write "
            '{"secret": "NAME"} in its place',
            name,
        )


# --- the source -------------------------------------------------------------------------------


def _frame(records: list[Any]) -> pl.DataFrame:
    if not records:
        return pl.DataFrame()
    if all(isinstance(r, dict) for r in records):
        return pl.from_dicts(records, infer_schema_length=None)
    return pl.DataFrame({"value": records}, strict=False)


@dataclass
class _Page:
    records: list[Any]
    doc: Any
    response: Any


class RestApiSource(Source):
    config: RestApiSourceConfig

    def __init__(self, config: RestApiSourceConfig, ctx: Any, name: str = "source"):
        super().__init__(config, ctx, name)
        self._records = parse_path(config.records_path) if config.records_path else None
        self.pages = 0  # pages read (tests, statistics)
        self._limit: int | None = None  # the read's row limit (a preview asks for a few rows)

    def _client(self) -> RestClient:
        return RestClient(self.config, self.ctx, self.name, "source")

    def _fetch(self, client: RestClient, url: str, params: dict[str, Any] | None) -> _Page:
        c = self.config
        kwargs: dict[str, Any] = {}
        if c.body is not None:
            kwargs["json"] = c.body
        response = client.request(c.method, url, params, **kwargs)
        try:
            doc = json.loads(response.content) if response.content else None
        except ValueError as exc:
            raise DataError(
                f"the answer is not JSON ({exc})", file=f"{c.method} {_safe_url(str(response.url))}"
            ) from None
        records = records_at(doc, self._records)
        return _Page(records, doc, response)

    def pages_of(self, client: RestClient) -> Iterator[_Page]:
        c, p = self.config, self.config.pagination
        url = c.full_url
        count = 0

        def more() -> bool:
            return c.max_pages is None or count < c.max_pages

        if p is None:
            yield self._fetch(client, url, c.params)
        elif isinstance(p, PagePagination | OffsetPagination):
            yield from self._numbered(client, url, p)
        elif isinstance(p, CursorPagination):
            steps, cursor, seen = parse_path(p.cursor_path), None, set()
            while more():
                params = dict(c.params) | ({p.cursor_param: cursor} if cursor is not None else {})
                page = self._fetch(client, url, params)
                count += 1
                yield page
                cursor = first_value(page.doc, steps)
                if not page.records or cursor in (None, "") or isinstance(cursor, dict | list):
                    return
                if cursor in seen:
                    raise ConnectorError(
                        f"{self.name}: the API returned cursor '{shorten(str(cursor), 60)}' twice"
                    )
                seen.add(cursor)
        else:  # link_header, next_url: follow the links
            params: dict[str, Any] | None = c.params
            steps = parse_path(p.next_url_path) if isinstance(p, NextUrlPagination) else ()
            seen = {url}
            while more():
                page = self._fetch(client, url, params)
                count += 1
                yield page
                if isinstance(p, LinkHeaderPagination):
                    nxt = parse_link_header(page.response.headers.get("Link")).get("next")
                else:
                    nxt = first_value(page.doc, steps)
                if not page.records or not nxt or not isinstance(nxt, str):
                    return
                nxt = urllib.parse.urljoin(str(page.response.url), nxt)
                if nxt in seen:
                    raise ConnectorError(f"{self.name}: the API links to {_safe_url(nxt)} twice")
                seen.add(nxt)
                url, params = nxt, None  # the next link carries its own query

    def _numbered_params(self, p: PagePagination | OffsetPagination, i: int) -> dict[str, Any]:
        """The query of page `i` (0: the first)."""
        params = dict(self.config.params)
        if isinstance(p, PagePagination):
            params[p.page_param] = p.start + i
            if p.size_param and p.size:
                params[p.size_param] = p.size
        else:
            params[p.offset_param] = p.start + i * p.limit
            params[p.limit_param] = p.limit
        return params

    def _numbered(
        self, client: RestClient, url: str, p: PagePagination | OffsetPagination
    ) -> Iterator[_Page]:
        c = self.config
        size = p.size if isinstance(p, PagePagination) else p.limit

        last = c.max_pages if c.max_pages is not None else None
        pool = cf.ThreadPoolExecutor(max_workers=c.concurrency, thread_name_prefix=f"rest-{self.name}")
        pending: deque[cf.Future] = deque()
        nxt = 0
        try:
            while True:
                window = c.concurrency
                if self._limit is not None and size:  # a preview of 5 rows needs one page, not 4
                    window = max(1, min(window, -(-self._limit // size)))
                while len(pending) < window and (last is None or nxt < last):
                    pending.append(pool.submit(self._fetch, client, url, self._numbered_params(p, nxt)))
                    nxt += 1
                if not pending:
                    return
                page = pending.popleft().result()
                if not page.records:
                    return
                yield page
                if size is not None and len(page.records) < size:
                    return
        finally:
            for future in pending:
                future.cancel()
            if pending:  # pages still in flight after an error or the last page: stop their waits
                client.stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        if limit is not None and limit <= 0:
            return
        _warn_clear(self.config, self.ctx, self.name)
        self._limit = limit
        client = self._client()
        held: list[pl.DataFrame] = []
        rows = 0
        total = 0
        try:
            for page in self.pages_of(client):
                if self.ctx.cancel.is_set():
                    raise RunCancelled("run cancelled")
                self.pages += 1
                if not page.records:
                    continue
                frame = self._table(lambda page=page: _frame(page.records), page)
                if limit is not None and total + frame.height > limit:
                    frame = frame.head(limit - total)
                held.append(frame)
                rows += frame.height
                total += frame.height
                if rows >= batch_rows:
                    yield self._table(lambda held=held: _concat(held), page)
                    held, rows = [], 0
                if limit is not None and total >= limit:
                    break
            if held:
                yield self._table(lambda: _concat(held), None)
        finally:
            client.close()

    def _table(self, build: Callable[[], pl.DataFrame], page: _Page | None) -> pl.DataFrame:
        """`build()`; records whose fields cannot share a column type (a list in one record, an
        object or a text in another) are one line naming the page, not a traceback."""
        try:
            return build()
        except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
            where = f"page {self.pages}" + (f" ({_safe_url(str(page.response.url))})" if page else "")
            raise DataError(
                f"the records do not fit one table: {first_line(exc)}", file=f"{self.name}, {where}"
            ) from None

    def check(self) -> None:
        """One request for the first page (plus the token request for OAuth2)."""
        client = self._client()
        try:
            p = self.config.pagination
            params = self.config.params
            if isinstance(p, PagePagination | OffsetPagination):
                params = self._numbered_params(p, 0)  # the first page, as a read asks for it
            self._fetch(client, self.config.full_url, params)
        finally:
            client.close()


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


# --- the destination --------------------------------------------------------------------------


class RestApiSink(Sink):
    """Spools the run's rows to a temporary Arrow file; sends them at commit (see the module)."""

    config: RestApiSinkConfig

    def __init__(self, config: RestApiSinkConfig, ctx: Any, name: str = "destination"):
        super().__init__(config, ctx, name)
        self.spool: str | None = None
        self._writer: Any = None
        self._forget: Callable[[], None] = lambda: None
        self.rows = 0
        self.sent = 0  # records delivered (2xx)
        self.requests = 0

    def open(self) -> None:
        _warn_clear(self.config, self.ctx, self.name)
        # in the data directory (its disk is the one sized for the data), else the system's temp
        folder = self.ctx.data_dir if Path(self.ctx.data_dir).is_dir() else None
        fd, path = tempfile.mkstemp(prefix=".rest-spool-", suffix=".arrow", dir=folder)
        os.close(fd)
        self._forget = self.ctx.track("file", path)
        self.spool, self._writer, self.rows, self.sent = path, None, 0, 0

    def write(self, batch: pl.DataFrame) -> None:
        import pyarrow.ipc as ipc

        if self.spool is None:
            raise ConnectorError(f"{self.name}: write() before open()")
        if batch.height == 0:
            return
        from engine.connectors.webhook import json_frame

        table = json_frame(batch).to_arrow()
        if self._writer is None:
            self._schema = table.schema
            self._writer = ipc.new_stream(self.spool, table.schema)
        elif table.schema != self._schema:  # a later batch with other types: cast to the first's
            table = self._conform(pl.from_arrow(table))
        self._writer.write_table(table)
        self.rows += batch.height

    def _conform(self, frame: pl.DataFrame) -> Any:
        """A batch whose types differ from the first one's, cast to them (the spool has one
        schema); a column that cannot be cast is a one-line error."""
        import pyarrow as pa

        cols = []
        for field in self._schema:
            if field.name not in frame.columns:
                cols.append(pa.nulls(frame.height, field.type))
                continue
            col = frame.get_column(field.name).to_arrow()
            try:
                cols.append(col.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(
                    f"column '{field.name}' changed type from {field.type} to {col.type} between batches",
                    file=self.name,
                ) from None
        return pa.Table.from_arrays(cols, schema=self._schema)

    def _batches(self) -> Iterator[pl.DataFrame]:
        import pyarrow.ipc as ipc

        if self._writer is None or self.spool is None:
            return
        with ipc.open_stream(self.spool) as reader:
            step = self.config.batch_rows
            held: list[pl.DataFrame] = []
            rows = 0
            for record_batch in reader:
                frame = pl.from_arrow(record_batch)
                assert isinstance(frame, pl.DataFrame)
                held.append(frame)
                rows += frame.height
                while rows >= step:
                    whole = pl.concat(held) if len(held) > 1 else held[0]
                    yield whole.head(step)
                    rest = whole.slice(step)
                    held, rows = ([rest] if rest.height else []), rest.height
            if held:
                yield pl.concat(held) if len(held) > 1 else held[0]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        client = RestClient(self.config, self.ctx, self.name, "destination")
        try:
            for chunk in self._batches():
                body = chunk.write_json().encode()
                if self.config.wrap:
                    body = b'{"' + json.dumps(self.config.wrap)[1:-1].encode() + b'":' + body + b"}"
                key = hashlib.sha256(body).hexdigest()
                try:
                    client.request(
                        self.config.method,
                        self.config.full_url,
                        None,
                        content=body,
                        headers={"Content-Type": "application/json", "Idempotency-Key": key},
                    )
                except AggregatorError as exc:
                    if self.sent:
                        note = f" ({self.sent} of {self.rows} records were delivered before this)"
                        raise type(exc)(exc.one_line() + note) from None
                    raise
                self.sent += chunk.height
                self.requests += 1
        finally:
            client.close()
            self._drop_spool()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._drop_spool()

    def _drop_spool(self) -> None:
        self._writer = None
        if self.spool is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.spool)
            self.spool = None
            self._forget()

    def check(self) -> None:
        """One request: OPTIONS to the endpoint (any answer but 401/403 and no answer is fine)."""
        client = RestClient(self.config, self.ctx, self.name, "destination")
        try:
            try:
                client.request("OPTIONS", self.config.full_url, None)
            except AuthError:
                raise
            except ConnectorError as exc:
                if "HTTP " not in str(exc):
                    raise
        finally:
            client.close()

    def describe_target(self) -> str:
        return f"{self.config.method} {_safe_url(self.config.full_url)}"


@register
class RestApiConnector(Connector):
    connector_type = "rest_api"
    title = "REST API"
    SourceConfig: ClassVar[type[RestApiSourceConfig]] = RestApiSourceConfig
    SinkConfig: ClassVar[type[RestApiSinkConfig]] = RestApiSinkConfig

    source_class = RestApiSource
    sink_class = RestApiSink
