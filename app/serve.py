"""`aggregator serve`: the composition root of the headless service.

One process owns the data directory (engine/service/lock.py), runs one engine on it, serves the
HTTP API with uvicorn on a thread of its own (its signal handling off, so ours runs), and keeps the
pipelines of the data directory and of `--pipelines` running on their schedules
(engine/service/host.py). SIGTERM or Ctrl-C stops new work, gives the runs in flight
`--stop-timeout` seconds to finish (then cancels them: destinations abort, nothing half-written),
closes the stores, releases the lock and exits 0. systemd hears READY, WATCHDOG and STOPPING
through `$NOTIFY_SOCKET` (engine/service/sdnotify.py).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from app.memory import TRIM_EVERY_S, settle_memory, tune_malloc

SETTLE_AFTER_S = 3.0  # after start-up: start-up's garbage collected, the rest frozen (settle_memory)
log = logging.getLogger("aggregator.service")


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one line before anything starts."""
    from engine.errors import AggregatorError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP. With proto 0,
    # Nagle held a response's body until the client ACKed its headers, and a keep-alive client's
    # delayed ACK made every request ~40 ms (issue 10 performance, tests/benchmarks/bench_api_load.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        error = AggregatorError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        error.exit_code = 2
        raise error from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _logging(data_dir: Path) -> Path:
    """The operator's lines on stderr and the JSON-lines log file under the data directory
    (engine/service/logs.py); returns the file's path."""
    from engine.service.logs import setup_logging

    log.setLevel(logging.INFO)
    return setup_logging(data_dir)


def _say(level: str, text: str) -> None:
    """A line of the service (masked by the logging set-up, engine/service/logs.py)."""
    log.log(logging.getLevelName(level.upper()), text)


def _engine(data_dir: Path):
    from engine.api.local import LocalEngine

    return LocalEngine(data_dir)


def _app(engine: Any, token: str, listen_host: str, metrics: Any):
    """The HTTP API (app/http), with the service's metrics behind `/metrics`."""
    from app.http import create_app
    from engine.service.metrics import render

    return create_app(engine, token=token, listen_host=listen_host, metrics=lambda: render(metrics.registry))


def cmd_serve(args: argparse.Namespace) -> int:
    trim = tune_malloc()  # before the imports below start threads
    # No cyclic GC while start-up imports (~1,100 modules): it ran many times over objects that all
    # live on, ~10% of the CPU to the first /health. After start-up, those objects are frozen (never
    # scanned again) and the collector runs as usual.
    gc.disable()
    from engine.api.local import default_data_dir
    from engine.service import lock as service_lock
    from engine.service import token as service_token
    from engine.service.host import ServiceHost
    from engine.service.logs import EventLog, teardown_logging
    from engine.service.metrics import EngineMetrics
    from engine.service.sdnotify import Notifier

    started = time.monotonic()
    from app.tls import choose

    # before anything starts: a plain-HTTP bind beyond loopback is refused (exit 2, one line)
    tls = choose(getattr(args, "tls", None), getattr(args, "insecure", False), args.listen[0])
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    held = service_lock.acquire(data_dir)  # a second serve: exit 2, naming the holder's PID
    log_path = _logging(data_dir)
    notifier = Notifier()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    engine = server = thread = None
    try:
        listen_host, port = args.listen
        sock = _bind(listen_host, port)
        port = sock.getsockname()[1]
        token = service_token.ensure(data_dir)
        engine = _engine(data_dir)
        metrics = EngineMetrics()
        metrics.attach(engine)
        engine.subscribe(EventLog())
        recovered = getattr(engine.workspace, "recovered", []) or []
        for run in recovered:
            _say("warning", f"run {run['run_id']} of '{run['pipeline']}' marked interrupted: {run['error']}")
        host = ServiceHost(
            engine, [p.expanduser() for p in args.pipelines], say=_say, on_lag=metrics.observe_scheduler_lag
        )
        server, thread = _start_http(_app(engine, token, listen_host, metrics), sock, tls)
        shown = f"[{listen_host}]" if ":" in listen_host else listen_host
        url = f"{'https' if tls else 'http'}://{shown}:{port}"
        held.publish(url)
        host.start()
        _say(
            "info", f"serving {data_dir} at {url} (API docs {url}/docs) in {time.monotonic() - started:.2f} s"
        )
        _say_transport(tls, listen_host, getattr(args, "insecure", False))
        _say("info", f"API token: {service_token.path_hint(data_dir)}")
        _say("info", f"log file: {log_path}")
        notifier.ready(f"serving {url}")
        trimmed = time.monotonic()
        settled = False
        while not stop.wait(0.5):
            if thread is not None and not thread.is_alive():
                _say("error", "the HTTP server stopped; shutting down")
                break
            if not settled and time.monotonic() - trimmed >= SETTLE_AFTER_S:
                settle_memory(trim)  # not at once: a full collection would delay the first requests
                settled = True
            if trim is not None and time.monotonic() - trimmed >= TRIM_EVERY_S:
                trim()
                trimmed = time.monotonic()
        notifier.stopping()
        _say("info", f"stopping: no new runs; runs in flight have {args.stop_timeout:g} s to finish")
        counts = host.stop(args.stop_timeout)
        if counts["cancelled"]:
            _say("warning", f"{counts['cancelled']} run(s) did not finish in time and were cancelled")
        return 0
    finally:
        if server is not None:
            _close_event_streams(server.config.app)  # else uvicorn waits for their clients to hang up
            server.should_exit = True
        if thread is not None:
            thread.join(5)
        if engine is not None:
            engine.close(args.stop_timeout)
        notifier.close()
        held.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if engine is not None:
            _say("info", "stopped")
        teardown_logging()
        gc.enable()


def _close_event_streams(app: Any) -> None:
    """End the API's open event streams (app/http/events.py), so that stopping does not wait on them."""
    if getattr(getattr(app, "state", None), "streams_closing", None) is not None:
        from app.http.events import close_streams

        close_streams(app)


def _say_transport(tls: Any, host: str, insecure: bool) -> None:
    """The certificate a client should see (its SHA-256 fingerprint), or the warning for --insecure."""
    from app.tls import is_loopback

    if tls is not None:
        made = " (made now)" if tls.generated else ""
        _say("info", f"TLS certificate {tls.cert}{made}, SHA-256 fingerprint {tls.fingerprint}")
    elif insecure and not is_loopback(host):
        _say(
            "warning",
            f"--insecure: plain HTTP on {host}; the API token and the data cross the network in clear",
        )
    elif insecure:
        _say("warning", f"--insecure: {host} is loopback, which is served in plain HTTP anyway")


def _start_http(app: Any, sock: socket.socket, tls: Any = None):
    """uvicorn on its own thread (a thread installs no signal handlers: ours stay in force); returns
    once it accepts connections. `tls`: app/tls.TlsFiles, or None for plain HTTP."""
    import uvicorn

    extra: dict[str, Any] = {}
    if tls is not None:
        extra = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
    # loop="asyncio": uvicorn's "auto" takes uvloop whenever it is installed (it is, for busy protocol
    # sources: protocols/event_loop.py); for the API it measured no gain (0.1 - 0.4 ms a request,
    # noise) and cost the idle service 3.4 MB (docs/performance.md).
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", loop="asyncio", **extra
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        from engine.errors import AggregatorError

        raise AggregatorError("the HTTP server did not start")
    return server, thread
