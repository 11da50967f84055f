"""`NewestRows.settle` waits for a running write of `tag_last` (engine/store/tag_newest.py): that
write leaves the timers' table when it starts (so that it may ask for the next one), and `settle`
did not see it, so `Historian.close` closed the connection under its statement ("connection is
busy with another call", seen in a loaded CI run)."""

from __future__ import annotations

import threading

from engine.store.tag_newest import NewestRows
from tests.waiting import wait_for


def test_settle_waits_for_a_running_write_that_asks_for_the_next():
    rows = NewestRows()
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        started.set()
        release.wait(30)
        rows.later("last", 60.0, lambda: None, again_while_running=True)  # the next one, as it does
        finished.set()

    rows.later("last", 0.0, write, again_while_running=True)
    wait_for(started.is_set, timeout=30, what="the write running")
    settled = threading.Event()
    settler = threading.Thread(target=lambda: (rows.settle(("last",)), settled.set()))
    settler.start()
    try:
        assert not settled.wait(0.3)  # the write still runs: settle must not return
    finally:
        release.set()
    settler.join(30)
    assert settled.is_set() and finished.is_set()
    assert "last" not in rows._timers  # the next write it asked for was cancelled too
    assert not any(rows._running.values())
