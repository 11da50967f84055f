"""A per-client-address limit for the login routes: at most `limit` attempts in `window_s`
seconds (a sliding window), then 429 with `Retry-After`. In memory: a restart forgets it, and the
account lockout (engine/auth/users.py) holds across restarts."""

from __future__ import annotations

import collections
import math
import threading
import time

from app.http.errors import ApiError

LOGIN_LIMIT = 10
LOGIN_WINDOW_S = 60.0
MAX_CLIENTS = 10_000  # addresses remembered; the oldest are forgotten first


class TooManyRequests(ApiError):
    status_code = 429


class RateLimiter:
    def __init__(self, limit: int = LOGIN_LIMIT, window_s: float = LOGIN_WINDOW_S):
        self.limit = limit
        self.window_s = window_s
        self._hits: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def check(self, client: str | None, what: str = "login attempts") -> None:
        """Count one attempt of `client`; TooManyRequests once it has had `limit` in the window."""
        key = client or "?"
        now = time.monotonic()
        with self._lock:
            hits = self._hits.pop(key, None) or collections.deque()
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            self._hits[key] = hits
            while len(self._hits) > MAX_CLIENTS:
                self._hits.popitem(last=False)
            if len(hits) >= self.limit:
                wait = max(1, math.ceil(hits[0] + self.window_s - now))
                error = TooManyRequests(
                    f"too many {what} from {key}: at most {self.limit} in {self.window_s:g} s; try again in {wait} s"
                )
                error.headers = {"Retry-After": str(wait)}
                raise error
            hits.append(now)
