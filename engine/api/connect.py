"""`engine_for(data_dir)`: the engine a client uses on a data directory (architecture: one front
door). When a running `aggregator serve` owns the directory (engine/service/lock.py: it holds the
lock and has published its API URL), the client talks to it (`RemoteEngine`), so the CLI works next
to a service with no lock error; otherwise the engine runs in this process (`LocalEngine`).

The token is the data directory's own (engine/service/token.py): a process that can read the data
directory's secret store may drive its service, as admin. `$AGGREGATOR_TOKEN` replaces it: a user's
access token (`aggregator login`) makes the CLI act as that user, with that user's role. An engine
in this process acts as the local OS user, as admin (engine/auth/principal.py), through the same
checked, audited view the service gives its callers. Nothing heavy is imported on the remote path
(no Polars, no DuckDB): `aggregator runs` next to a service stays quick.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from engine.api.protocol import EngineAPI
from engine.datadir import default_data_dir

TOKEN_ENV = "AGGREGATOR_TOKEN"  # a user's access token (or the service's token) for a running service
STARTING_WAIT_S = 5.0  # a service that holds the lock but has not published its URL yet: wait this long


def service_url(data_dir: Path | str | None = None, wait: float = STARTING_WAIT_S) -> str | None:
    """The API URL of the service that owns `data_dir`, or None when no service runs on it. A
    service that is still starting is waited for (up to `wait` s); one that never publishes its URL
    is an error naming its PID."""
    from engine.service import lock

    where = Path(data_dir).expanduser() if data_dir else default_data_dir()
    deadline = time.monotonic() + wait
    while True:
        found = lock.owner(where)
        if found is None:
            return None
        pid, url = found
        if url:
            return url
        if time.monotonic() >= deadline:
            from engine.api.remote.client import ServiceUnavailable  # httpx: only when it is said

            raise ServiceUnavailable(
                f"{where} is served by process {pid}, which has not said where its API listens"
                f" ({lock.INFO_FILE}); is it still starting?"
            )
        time.sleep(0.05)


def engine_for(data_dir: Path | str | None = None, source: str = "cli") -> EngineAPI:
    """A `RemoteEngine` on the service that owns `data_dir` (with `$AGGREGATOR_TOKEN`, else the
    service's token), else a `LocalEngine` on it as the local OS user (admin; closing the view
    closes the engine). `source` names the client in the audit trail."""
    where = Path(data_dir).expanduser() if data_dir else default_data_dir()
    url = service_url(where)
    if url is not None:
        from engine.api.remote import RemoteEngine
        from engine.service import token

        return RemoteEngine(
            url, os.environ.get(TOKEN_ENV) or token.ensure(where), data_dir=where, source=source
        )
    from engine.api.local import LocalEngine
    from engine.auth.principal import local_admin

    return LocalEngine(where, nice=0).as_principal(
        local_admin(source), owns=True
    )  # no window to keep answering


@contextlib.contextmanager
def without_viewers(*, streaming: bool = False) -> Iterator[None]:
    """For a process with no viewer of its own (a foreground `aggregator run`: no window, no API):
    the live ring buffers made meanwhile keep nothing, and import no numpy, until something reads
    them (engine/store/ring_buffer.py `set_start_lease`). `streaming` (a real-time run, which runs
    no bulk query): its historian gives DuckDB's freed memory back at once (engine/store/historian.py
    `release_at_once`). The defaults are back afterwards: the settings are the process's, and a test
    may run the command line in its own process."""
    from engine.store.historian import release_at_once
    from engine.store.ring_buffer import DEFAULT_LEASE_S, set_start_lease

    set_start_lease(0)
    release_at_once(streaming)
    try:
        yield
    finally:
        set_start_lease(DEFAULT_LEASE_S)
        release_at_once(False)


__all__ = ["engine_for", "service_url", "without_viewers"]
