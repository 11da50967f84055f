"""The forwarder against a real (SQLite) upstream that deduplicates on the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from engine.outbox.store import OutboxStore, outbox_path
from tests.outbox.conftest import commit, tags
from tests.waiting import wait_for


def _store(outbox, name="central"):
    return outbox.store("line1", name)


def test_delivers_every_record_once_in_order_per_tag(outbox, upstream):
    for i in range(20):
        commit(outbox, tags(100, start=i * 100))
    store = _store(outbox)
    wait_for(lambda: store.pending()[1] == 0 and upstream.count() == 2000, what="all delivered")
    rows = upstream.rows()
    per_tag: dict[str, list[int]] = {}
    for _key, tag, ts, *_ in rows:
        per_tag.setdefault(tag, []).append(ts)
    assert all(ts == sorted(ts) for ts in per_tag.values())
    status = store.status()
    assert status["appended_records"] == status["forwarded_records"] == 2000
    assert status["link_state"] == "up"
    assert len({r[0] for r in rows}) == 2000


def test_outage_drains_live_first_under_the_throttle(outbox, upstream):
    upstream.down, upstream.retry_after = True, 0.05
    cfg = {"backfill_rows_per_s": 1000}
    for i in range(10):  # 5000 records pile up while the link is down
        commit(outbox, tags(500, start=i * 500), **cfg)
    store = _store(outbox)
    wait_for(lambda: store.status()["link_state"] == "down", what="link down")
    upstream.down = False
    t0 = time.monotonic()
    wait_for(lambda: upstream.count() > 0, what="backlog starts")
    commit(outbox, tags(50, start=100_000), **cfg)  # live data during the drain
    wait_for(lambda: upstream.count() == 5050, timeout=60, what="drain complete")
    drained = time.monotonic() - t0
    rows = upstream.rows()
    live = [i for i, r in enumerate(rows) if r[2] is not None and r[2] >= 0 and r[3] >= 100_000]
    backlog = [i for i, r in enumerate(rows) if r[3] < 100_000]
    assert all(rows[i][6] == 0 for i in live) and all(rows[i][6] == 1 for i in backlog)
    assert min(live) < max(backlog), "live data waited for the whole backlog"
    assert drained >= 5000 / 1000 * 0.7  # throttled (whole batches: chunks of 1000 records per second)
    per_tag: dict[str, list[int]] = {}
    for i in backlog:
        per_tag.setdefault(rows[i][1], []).append(rows[i][2])
    assert all(ts == sorted(ts) for ts in per_tag.values())


def test_poison_record_is_quarantined_and_the_rest_moves(outbox, upstream):
    commit(outbox, tags(1, start=0))
    store = _store(outbox)
    wait_for(lambda: upstream.count() == 1, what="first record")
    poison_key = upstream.rows()[0][0].replace("/t0|sim|1767225600000000", "/t1|sim|1767225600037000")
    upstream.poison = {poison_key}
    commit(outbox, tags(100, start=0), max_tries=3)
    wait_for(lambda: store.pending()[1] == 0, what="outbox drained")
    keys = {r[0] for r in upstream.rows()}
    assert poison_key not in keys and len(keys) == 99
    [entry] = store.quarantine_list()
    assert entry["records"] == 1 and entry["tries"] == 3 and "refused" in entry["reason"]
    assert store.status()["quarantined_records"] == 1
    exported = store.quarantine_records()
    assert exported[0]["_key"] == poison_key and json.dumps(exported, default=str)
    upstream.poison = set()
    assert store.quarantine_retry() == 1
    wait_for(lambda: upstream.count() == 100, what="retried record delivered")
    assert store.quarantine_list() == []


def test_quarantine_delete(outbox, upstream):
    commit(outbox, tags(1, start=5))
    wait_for(lambda: upstream.count() == 1, what="first")
    key = upstream.rows()[0][0]
    upstream.poison = {key.replace("/t1|sim|1767225600005000", "/t2|sim|1767225600006000")}
    commit(outbox, tags(2, start=5), max_tries=1)
    store = _store(outbox)
    wait_for(lambda: store.quarantine_list(), what="quarantined")
    assert store.quarantine_delete() == 1 and store.quarantine_list() == []


CRASHER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from engine.outbox.manager import OutboxManager
    from engine.outbox.forwarder import Forwarder
    from engine.outbox.config import RemoteSinkConfig
    from tests.outbox.upstream import Upstream, UpstreamTarget
    from tests.outbox.conftest import tags, make_ctx
    from engine.outbox.sinks import remote_sink
    from tests.outbox.upstream import FakeRemote, attach

    data, central = Path(sys.argv[1]), Path(sys.argv[2])
    up = Upstream(central)
    manager = OutboxManager(data)
    manager.register = lambda *a, **k: None  # no forwarder while appending
    attach(data, up)
    for i in range(10):
        sink = remote_sink(FakeRemote, RemoteSinkConfig(), make_ctx(manager), "central")
        sink.open(); sink.write(tags(100, start=i * 100)); sink.close()
    store = manager.store("line1", "central")
    fwd = Forwarder(store, lambda: UpstreamTarget(up), RemoteSinkConfig(), chunk_rows=300)
    calls = []
    def crash(seqs):
        calls.append(seqs)
        if len(calls) == 2:
            os._exit(9)  # delivered, cursor not saved
    fwd.before_cursor = crash
    fwd.run()
    """
)


def test_crash_between_delivered_and_cursor_saved_duplicates_nothing(tmp_path, outbox, upstream):
    data = outbox.data_dir
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(data), str(upstream.path)], env=env, timeout=120
    )
    assert proc.returncode == 9
    assert upstream.count() == 600  # two deliveries of 300 reached the upstream
    store = OutboxStore(outbox_path(data, "line1", "central"))
    assert store.status()["forwarded_records"] == 300  # the second one's cursor was never saved
    store.close()
    commit(outbox, tags(0))  # the pipeline runs again: its forwarder starts
    s = _store(outbox)
    wait_for(lambda: s.pending()[1] == 0 and upstream.count() == 1000, what="redelivered")
    assert upstream.count() == 1000 and len({r[0] for r in upstream.rows()}) == 1000
    assert s.status()["forwarded_records"] == 1000


@pytest.mark.parametrize("n", [3])
def test_status_survives_restart(outbox, upstream, n):
    for i in range(n):
        commit(outbox, tags(10, start=i * 10))
    store = _store(outbox)
    wait_for(lambda: store.pending()[1] == 0, what="delivered")
    before = store.status()
    outbox.close()
    again = OutboxStore(outbox_path(outbox.data_dir, "line1", "central"))
    after = again.status()
    again.close()
    for k in ("appended_records", "forwarded_records", "dropped_records", "quarantined_records"):
        assert after[k] == before[k]
    assert after["appended_records"] == 30
