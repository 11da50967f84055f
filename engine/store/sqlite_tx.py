"""One way to hold a SQLite write transaction, for the stores that keep their own file (the outbox,
the alerts): `BEGIN IMMEDIATE` takes the write lock first, so a transaction that reads then
writes never fails to upgrade; any error rolls the whole transaction back."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def immediate(con: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """A write transaction on `con` (opened with `isolation_level=None`), under `lock`."""
    with lock:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
