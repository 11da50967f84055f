"""A TCP fault proxy for the tests: put it between a client and a real server (PostgreSQL, an MQTT
broker, NATS) and break the link on demand.

    with FaultProxy("127.0.0.1", 5432) as proxy:
        connect to proxy.port ...
        proxy.latency(5.0)          # every chunk the server sends arrives 5 s late
        proxy.black_hole()          # connections accept and never answer; data is swallowed
        proxy.refuse()              # the port refuses connections; open ones are reset
        proxy.reset_all()           # reset (RST) every open connection now
        proxy.reset_after(10_000)   # reset each connection once 10 kB more went to the server
        proxy.reset_on(b"COMMIT\\0") # forward the client's chunk holding this, then reset the
                                    # client: the server acts on it, the reply is lost
                                    # (at_end=True: only a chunk that ends with it, e.g. the
                                    # last message before the client waits)
        proxy.pass_through()        # back to normal (the faults above are switched off)

Faults apply to open connections and to new ones. One thread accepts; one thread per connection
moves bytes both ways (select with a short tick, so a mode change takes effect within it).
Latency is a delay line: chunks keep their order and are not serialised behind each other's sleep.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections import deque

TICK_S = 0.02
CHUNK = 65536


def _rst(sock: socket.socket) -> None:
    """Close with a reset (RST), not a FIN: the peer sees 'connection reset by peer'."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._mode = "pass"  # pass | black_hole | refuse
        self._latency = {"to_client": 0.0, "to_server": 0.0}
        self._reset_after: int | None = None
        self._reset_on: bytes | None = None
        self._reset_at_end = False
        self._generation = 0  # bumped on every mode change; a connection re-arms its byte count
        self._conns: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0  # accepted in all
        self.resets = 0  # connections this proxy reset

    # ---- life --------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        for link in self._links():
            link.close(reset=True)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    # ---- faults ------------------------------------------------------------------------------------
    def _set(self, **changes: object) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self, key, value)
            self._generation += 1

    def pass_through(self) -> None:
        was_refusing = self._mode == "refuse"
        self._set(
            _mode="pass", _latency={"to_client": 0.0, "to_server": 0.0}, _reset_after=None, _reset_on=None
        )
        if was_refusing:
            self._listen()

    def latency(self, seconds: float, direction: str = "to_client") -> None:
        """Delay every chunk by `seconds`: `to_client` (a slow server: the default), `to_server`,
        or `both`."""
        latency = dict(self._latency)
        for side in ("to_client", "to_server") if direction == "both" else (direction,):
            latency[side] = seconds
        self._set(_latency=latency)

    def black_hole(self) -> None:
        self._set(_mode="black_hole")

    def refuse(self) -> None:
        self._set(_mode="refuse")
        self._close_listener()
        self.reset_all()

    def reset_all(self) -> None:
        for link in self._links():
            link.close(reset=True)
            self.resets += 1

    def reset_after(self, nbytes: int) -> None:
        self._set(_reset_after=nbytes)

    def reset_on(self, pattern: bytes, *, at_end: bool = False) -> None:
        self._set(_reset_on=pattern, _reset_at_end=at_end)

    def open_connections(self) -> int:
        return len(self._links())

    # ---- inside ------------------------------------------------------------------------------------
    def _links(self) -> list[_Link]:
        with self._lock:
            return list(self._conns)

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        with self._lock:
            self._listener = sock

    def _close_listener(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                time.sleep(TICK_S)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], TICK_S * 5)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                continue  # the listener was closed under us (refuse)
            self.connections += 1
            link = _Link(self, client)
            with self._lock:
                self._conns.add(link)
            threading.Thread(target=link.run, name="faultproxy-link", daemon=True).start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._conns.discard(link)


class _Link:
    def __init__(self, proxy: FaultProxy, client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.closed = False
        self._close_lock = threading.Lock()
        self.queues: dict[str, deque[tuple[float, bytes]]] = {"to_client": deque(), "to_server": deque()}

    def close(self, *, reset: bool) -> None:
        with self._close_lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.server):
            if sock is None:
                continue
            if reset:
                _rst(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        self.proxy._forget(self)

    def run(self) -> None:
        try:
            self._run()
        except OSError:
            pass
        finally:
            self.close(reset=False)

    def _connect_upstream(self) -> bool:
        while not self.closed:
            if self.proxy._mode == "black_hole":  # accept, never answer, never reach the server
                self._swallow(self.client)
                continue
            try:
                self.server = socket.create_connection(self.proxy.upstream, timeout=5)
                return True
            except OSError:
                self.close(reset=True)
                return False
        return False

    def _swallow(self, sock: socket.socket) -> None:
        ready, _, _ = select.select([sock], [], [], TICK_S)
        if ready and not sock.recv(CHUNK):
            self.close(reset=False)

    def _run(self) -> None:
        if not self._connect_upstream():
            return
        assert self.server is not None
        generation, sent_since = -1, 0
        ends = {self.client: ("to_server", self.server), self.server: ("to_client", self.client)}
        while not self.closed:
            proxy = self.proxy
            if proxy._generation != generation:
                generation, sent_since = proxy._generation, 0
            if proxy._mode == "black_hole":
                for sock in select.select([self.client, self.server], [], [], TICK_S)[0]:
                    if not sock.recv(CHUNK):
                        return
                continue
            now = time.monotonic()
            waits = [q[0][0] - now for q in self.queues.values() if q]
            timeout = max(0.0, min([TICK_S, *waits]))
            for sock in select.select([self.client, self.server], [], [], timeout)[0]:
                data = sock.recv(CHUNK)
                if not data:
                    self._flush(force=True)
                    return
                direction, _ = ends[sock]
                if direction == "to_server":
                    if proxy._reset_after is not None:
                        room = proxy._reset_after - sent_since
                        if len(data) >= room:
                            self._send_now(self.server, data[: max(room, 0)])
                            proxy.resets += 1
                            self.close(reset=True)
                            return
                        sent_since += len(data)
                    pattern = proxy._reset_on
                    if pattern is not None and (
                        data.endswith(pattern) if proxy._reset_at_end else pattern in data
                    ):
                        self._flush(force=True)
                        self._send_now(self.server, data)
                        proxy.resets += 1
                        _rst(self.client)  # the reply never reaches the client
                        with contextlib.suppress(OSError):
                            self.server.shutdown(socket.SHUT_WR)  # the server reads its last chunk, then EOF
                        self.close(reset=False)
                        return
                self.queues[direction].append((time.monotonic() + proxy._latency[direction], data))
            self._flush(force=False)

    def _flush(self, *, force: bool) -> None:
        now = time.monotonic()
        for direction, queue in self.queues.items():
            target = self.server if direction == "to_server" else self.client
            while queue and (force or queue[0][0] <= now):
                self._send_now(target, queue.popleft()[1])

    @staticmethod
    def _send_now(sock: socket.socket | None, data: bytes) -> None:
        if sock is not None and data:
            sock.sendall(data)
