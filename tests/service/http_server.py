"""The HTTP API in this process, for the in-process API tests: a real `LocalEngine` on a tmp data
directory behind `create_app`, served by a real uvicorn server on a free loopback port (so the
event stream, which a test client would buffer whole, streams as it does for a real client)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.http import create_app
from app.http.events import close_streams
from app.serve import _bind, _start_http
from engine.api import LocalEngine
from engine.service import token as api_token
from tests.waiting import wait_for


@dataclass
class ApiServer:
    url: str
    token: str
    engine: LocalEngine
    app: object
    client: httpx.Client  # carries the token
    anonymous: httpx.Client  # does not

    def wait_for(self, condition, timeout: float = 30.0, what: str = "condition"):
        return wait_for(condition, timeout, what=what)


@contextlib.contextmanager
def api_server(data_dir: Path):
    engine = LocalEngine(data_dir)
    token = api_token.ensure(data_dir)
    app = create_app(engine, token=token, listen_host="127.0.0.1")
    sock = _bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server, thread = _start_http(app, sock)  # as `aggregator serve` starts it
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    anonymous = httpx.Client(base_url=url, timeout=30)
    try:
        yield ApiServer(url, token, engine, app, client, anonymous)
    finally:
        client.close()
        anonymous.close()
        close_streams(app)
        server.should_exit = True
        thread.join(15)
        sock.close()
        engine.close()
