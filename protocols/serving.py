"""What every simulator's `run_cli` shares: a free port first, then serve until Ctrl-C or for a
while, then stop."""

from __future__ import annotations

import errno
import socket
import sys
import time
from collections.abc import Callable

from engine.errors import UsageError


class PortInUse(UsageError):
    """A simulator's port is taken: one line, exit 2 (a usage error: choose another --port)."""

    def __init__(self, port: int, host: str):
        super().__init__(
            f"port {port} is in use on {host} (another program listens on it); choose another with --port"
        )
        self.port, self.host = port, host


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise PortInUse when a server could not listen on `host:port`. The probe binds the way
    servers do (SO_REUSEADDR on POSIX, so a port in TIME_WAIT is free; on Windows that option
    would let two servers share a port, so the probe binds exclusively)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if sys.platform == "win32":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
        else:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1), errno.EACCES):
                raise PortInUse(port, host) from None
            raise


def is_port_in_use(exc: BaseException) -> bool:
    """Did starting a server fail because its port is taken (the race after check_port_free)?"""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            return True
        if "address already in use" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def serve(stop: Callable[[], None], seconds: float | None) -> None:
    """Block until Ctrl-C (or until `seconds` have passed), then call `stop` whatever happened."""
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        stop()
