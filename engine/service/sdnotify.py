"""systemd's notification protocol, written directly (no systemd library): one datagram per state
line to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).

`READY=1` once the service answers, `WATCHDOG=1` every half of `$WATCHDOG_USEC` while it is alive,
`STOPPING=1` when it shuts down. Without `$NOTIFY_SOCKET` (not started by systemd) every call does
nothing. A notification that cannot be sent is never an error of the service.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if address.startswith("@"):
            self.address = b"\0" + address[1:].encode()  # abstract namespace
        elif address.startswith("/"):
            self.address = address
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
        except ValueError:
            usec = 0
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0  # the watchdog is meant for another process
        self.watchdog_interval = usec / 2e6 if usec > 0 else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one state text (`READY=1`, `STATUS=...`); False when not sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
            return True
        except OSError:
            return False

    def ready(self, status: str | None = None) -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
        self.start_watchdog()

    def stopping(self) -> None:
        self._stop.set()
        self.notify("STOPPING=1")

    def start_watchdog(self) -> None:
        """Ping `WATCHDOG=1` at half of `$WATCHDOG_USEC`, from a daemon thread, until `stopping()`."""
        if self.address is None or self.watchdog_interval is None or self._thread is not None:
            return

        def ping() -> None:
            while not self._stop.wait(self.watchdog_interval):
                self.notify("WATCHDOG=1")

        self._thread = threading.Thread(target=ping, name="sd-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(1.0)
