"""Why a connection to a device or broker failed, named the way a plant engineer reads it.

One rule for every protocol that opens a socket itself (Modbus TCP, MQTT): `connection refused`,
`no answer within <timeout>`, `unknown host (...)`, else the OS's own words; and when the next
attempt comes, `retrying every 2 s, backing off to 30 s`."""

from __future__ import annotations

import socket


def os_error_reason(exc: BaseException, timeout: str) -> str | None:
    """The reason for an OS-level connection failure (`timeout` as the user set it, "1000 ms" or
    "5 s"); None when `exc` is not one, so the caller names it in its own words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout}"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return None


def retrying(first: float, cap: float) -> str:
    """When the next attempts come: `retrying every <first> s, backing off to <cap> s` (the cap
    left out when it is no longer than the first wait)."""
    return f"retrying every {first:g} s" + (f", backing off to {cap:g} s" if cap > first else "")
