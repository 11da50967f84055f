"""`aggregator serve`'s arguments, apart from the service (app/serve.py): `aggregator --help`
builds every command's parser, and the service's module brings logging, sockets and the memory
tuning (~7 ms of the help's ~0.08 s) that only a service uses."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:8760"


def add_parser(sub: Any) -> None:
    sp = sub.add_parser("serve", help="run headless: schedules, streams and the HTTP API, until SIGTERM")
    sp.add_argument(
        "--data-dir", type=Path, help="data directory (default: $AGGREGATOR_HOME, else the user data dir)"
    )
    sp.add_argument(
        "--pipelines",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of pipeline spec files to serve too (reloaded when they change; repeatable)",
    )
    sp.add_argument(
        "--listen", type=listen_address, default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})"
    )
    sp.add_argument(
        "--tls",
        choices=["self-signed", "settings"],
        default=None,
        help="serve HTTPS: 'self-signed' makes (or reuses) a certificate in the config folder;"
        " 'settings' uses tls_cert and tls_key (used anyway when they are set)",
    )
    sp.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP on an address other than loopback (the API token crosses the network in clear)",
    )
    sp.add_argument(
        "--stop-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="on SIGTERM, how long runs in flight may take to finish before they are cancelled (default 10)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not 0 or more seconds")
    return value


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]") or "127.0.0.1", int(port)
