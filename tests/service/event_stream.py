"""The API's event stream (`GET /events`, server-sent events) followed in a thread until the first
`run_finished`, for the tests that execute a run over HTTP and watch it end."""

from __future__ import annotations

import json
import threading
from typing import Any


class RunEvents:
    """`events` (each `data:` line as an object) fill as they come; `connected` is set at the first
    line the stream sends, `finished` at the first `run_finished`, where the listening stops."""

    def __init__(self, client: Any, **params: Any):
        self.events: list[dict[str, Any]] = []
        self.connected, self.finished = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._listen, args=(client, params), daemon=True)
        self.thread.start()

    def _listen(self, client: Any, params: dict[str, Any]) -> None:
        with client.stream("GET", "/events", params=params, timeout=60) as stream:
            for line in stream.iter_lines():
                self.connected.set()
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                    if self.events[-1]["event"] == "run_finished":
                        self.finished.set()
                        return
