"""The HTTP side of `RemoteEngine`: an httpx client with the service's bearer token, its errors
turned back into the engine's own (one line each), and the event-stream reader.

Errors, as a CLI prints them (one line, no traceback):
- the service does not answer: `ServiceUnavailable` naming the URL;
- 401: `ServiceUnavailable` saying the token was refused and how to get the right one;
- 422 with `issues`: `SpecError` with every issue; 404: `DataError`; 400: `UsageError`;
  403: `PermissionError`; any other 4xx/5xx: `RemoteError` with the service's one line.

Events: the first `subscribe` starts one reader thread on `GET /events` (Server-Sent Events, one
`data:` line of JSON per event); each line becomes the typed record of engine/api/events.py
(`event_from_dict`) and goes to every subscriber, on the reader thread. A dropped stream is opened
again after a short pause until the client closes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.api.events import EngineEvent, event_from_dict
from engine.errors import AggregatorError, DataError, SpecError, SpecIssue, UsageError


def _import_httpx():
    """httpx, without its command-line tool: `import httpx` also imports `httpx._main` (rich, click)
    when those are installed, 40-60 ms that a client never uses (`aggregator runs` next to a service
    has 300 ms in all). httpx falls back to a stub `main` when that import fails."""
    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]  # makes its import fail
    try:
        import httpx
    finally:
        if blocked:
            del sys.modules["httpx._main"]
    return httpx


httpx = _import_httpx()

RECONNECT_S = 0.5  # pause before opening a dropped event stream again
EVENTS_READY_S = 5.0  # how long `subscribe(wait=True)` waits for the stream to open


class RemoteError(AggregatorError):
    """The service refused a request: its one-line error, with the HTTP status."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class ServiceUnavailable(RemoteError):
    """The service does not answer, or refuses the token (exit 2: an environment problem)."""

    exit_code = 2


LOGIN_PATHS = ("/auth/login", "/auth/refresh")  # a 401 there is a refused login, not a stale token


class AccessDenied(RemoteError, PermissionError):
    """The service refused the call for the caller's role (HTTP 403): its one line, exit 3 (as a
    local PermissionDenied, engine/auth/principal.py)."""

    exit_code = 3


def error_of(response: httpx.Response) -> Exception:
    """The engine error a service's error answer stands for."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("error") or f"HTTP {response.status_code}")
    status = response.status_code
    issues = body.get("issues")
    if status == 401 and response.request.url.path in LOGIN_PATHS:
        return AccessDenied(message, status)  # a login or refresh refused: the service's own line
    if status == 401 and response.request.headers.get("authorization", "").count(".") == 2:
        return ServiceUnavailable(f"{message} (`aggregator login` gives a new access token)", status)
    if status == 401:
        return ServiceUnavailable(
            f"{response.request.url.copy_with(path='/', query=None)}: the service refused the API token"
            " (`aggregator token` prints the right one)",
            status,
        )
    if status == 422 and isinstance(issues, list) and issues and "path" in issues[0]:
        error = SpecError(
            [
                SpecIssue(
                    str(i.get("path") or ""),
                    str(i.get("message") or ""),
                    i.get("allowed"),
                    node=i.get("node") or i.get("node_id"),
                )
                for i in issues
                if isinstance(i, dict)
            ]
        )
        error.args = (message,)  # the service's line names the source as the local one does
        return error
    if status == 404:
        return DataError(message)
    if status == 400:
        return UsageError(message)
    if status == 403:
        return AccessDenied(message, status)
    return RemoteError(message, status)


class ServiceClient:
    """One connection pool to the service at `url`, with the token on every request."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.closed = False
        self.tag_interval = 0.0  # seconds between `tag_values` events (0: none; the GUI sets it)
        from engine.datadir import client_tls  # https: the CA file of the settings (docs/security.md)

        try:
            verify = client_tls(self.url)
        except ValueError as exc:
            raise ServiceUnavailable(f"{self.url}: {exc}") from None
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,  # a proxy from the environment must not see a loopback API's token
            verify=verify,
        )
        self._subscribers: list[Callable[[EngineEvent], None]] = []
        self._sub_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stream_open = threading.Event()
        self._stop = threading.Event()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._response: httpx.Response | None = None  # the open event stream
        self._stream_error = ""  # why the event stream last failed to open or broke
        self._refused: RemoteError | None = None  # the service refused the token for the stream
        # A user's login (engine/api/remote/engine.py): called on a 401 for a new access token
        # (its refresh token spent), then the request is sent once more.
        self.renew_token: Callable[[], str | None] | None = None
        self._renew_lock = threading.Lock()

    # ---- requests ----------------------------------------------------------------------------
    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer of `method path` whatever its body (an Arrow one too); the engine's error for
        a 4xx/5xx or a service that does not answer."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServiceUnavailable(f"{self.url}: no answer within {self._http.timeout.read} s") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ServiceUnavailable(f"{self.url}: cannot reach the service ({reason})") from None
        if response.status_code == 401 and self.renew_token is not None and path not in LOGIN_PATHS:
            sent = response.request.headers.get("authorization", "")
            if self._renewed(sent):
                return self.send(method, path, **kwargs)
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def _renewed(self, sent: str) -> bool:
        """A new access token in place of the one `sent` (another thread may have renewed it
        already); False when it cannot be renewed (the refresh token expired: log in again)."""
        with self._renew_lock:
            if self._http.headers.get("authorization") != sent:
                return True
            try:
                token = self.renew_token() if self.renew_token else None
            except RemoteError:
                token = None
            if not token:
                self.renew_token = None  # no second try: the 401 goes to the caller
                return False
            self.token = token
            self._http.headers["Authorization"] = f"Bearer {token}"
            return True

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of `method path` (None for an empty one); the engine's error otherwise."""
        response = self.send(method, path, **kwargs)
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        if body is None:
            return self.request("POST", path, params=clean)
        return self.request("POST", path, params=clean, json=body)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """`fn(*args, **kwargs)` on a client thread."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="remote-engine")
        return self._pool.submit(fn, *args, **kwargs)

    # ---- events ------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[EngineEvent], None], wait: bool = True) -> Callable[[], None]:
        """Deliver every event to `callback` (on the reader thread); the unsubscribe function.
        With `wait`, return once the stream is open, so no event after this call is missed."""
        with self._sub_lock:
            self._subscribers.append(callback)
            if self._reader is None:
                self._reader = threading.Thread(target=self._read_events, name="remote-events", daemon=True)
                self._reader.start()
        if wait:
            deadline = time.monotonic() + EVENTS_READY_S
            while not self._stream_open.wait(0.05):
                refused = self._refused
                if refused is not None or time.monotonic() > deadline:
                    with self._sub_lock, contextlib.suppress(ValueError):
                        self._subscribers.remove(callback)
                    if refused is not None:  # a refused token: no use waiting
                        raise refused
                    why = f" ({self._stream_error})" if self._stream_error else ""
                    raise ServiceUnavailable(
                        f"{self.url}/events: the event stream did not open within {EVENTS_READY_S:g} s{why}"
                    )

        def unsubscribe() -> None:
            with self._sub_lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def _read_events(self) -> None:
        params = {"tag_interval": self.tag_interval}
        while not self._stop.is_set():
            try:
                with self._http.stream(
                    "GET", "/events", params=params, timeout=httpx.Timeout(10.0, read=None)
                ) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise error_of(r)
                    self._response = r
                    self._refused = None
                    self._stream_open.set()
                    for line in r.iter_lines():
                        if self._stop.is_set():
                            return
                        if line.startswith("data:"):
                            self._dispatch(line[5:].strip())
            except (httpx.HTTPError, RemoteError) as exc:  # opened again below (events meanwhile are lost)
                self._stream_error = str(exc) or type(exc).__name__
                if isinstance(exc, RemoteError) and exc.status == 401:
                    self._refused = exc
            self._stream_open.clear()
            self._stop.wait(RECONNECT_S)

    def _dispatch(self, text: str) -> None:
        try:
            event = event_from_dict(json.loads(text))
        except ValueError:  # a line this client cannot read: skipped, the stream goes on
            return
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            with contextlib.suppress(Exception):  # one subscriber's fault does not stop the others
                callback(event)

    def _hang_up(self) -> None:
        """End the event stream's read now: the reader waits in a socket read that closing the
        client does not interrupt (the service may say nothing for seconds), so shut the socket."""
        response = self._response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self, timeout: float = 10.0) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._hang_up()
        self._http.close()
        if self._reader is not None:
            self._reader.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
