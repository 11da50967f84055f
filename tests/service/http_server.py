"""The HTTP API in this process, for the in-process API tests: a real `LocalEngine` on a tmp data
directory behind `create_app`, served by a real uvicorn server on a free loopback port (so the
event stream, which a test client would buffer whole, streams as it does for a real client)."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.http import create_app
from app.http.events import close_streams
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
    import uvicorn

    engine = LocalEngine(data_dir)
    token = api_token.ensure(data_dir)
    app = create_app(engine, token=token, listen_host="127.0.0.1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    anonymous = httpx.Client(base_url=url, timeout=30)
    try:

        def started() -> bool:
            assert thread.is_alive(), "the API server did not start"
            return server.started

        wait_for(started, 20, 0.02, what="the API server to start")
        yield ApiServer(url, token, engine, app, client, anonymous)
    finally:
        client.close()
        anonymous.close()
        close_streams(app)
        server.should_exit = True
        thread.join(15)
        sock.close()
        engine.close()
