"""The outage: a streaming pipeline (MQTT JSON from a publisher in this test, through the real
Mosquitto) runs under `aggregator serve` into PostgreSQL through the fault proxy. The proxy refuses
the link for OUTAGE_S seconds (20 by default; the documented long mode is e.g. OUTAGE_S=300), then
lets it through again. The destination drains its backlog throttled (`backfill_rows_per_s`).

Asserted:
(a) during the outage the outbox grows (`aggregator outbox status --json`, answered by the
    service), its link state is `down` (or `connecting` while it retries), and nothing reaches
    the table;
(b) after the restore the drain completes: every record the outbox accepted is in PostgreSQL exactly
    once (`appended_records` rows, no duplicate tag and timestamp, nothing dropped or quarantined),
    and no tag has a hole (the service ran throughout);
(c) the order per tag is exactly the promise in docs/delivery.md ("Outages and the drain"): the
    table's identity column `_id` (made beforehand, see pg.create_tag_table) gives the order the
    rows were inserted in. Per tag, there is one cut c (the last record accepted before the
    forwarder reconnected) such that the records up to c (the backlog) arrive in timestamp order,
    and the records after c (live) arrive in timestamp order: the two lanes interleave, nothing
    else is out of order. c lies between the restore (minus what was still on its way in) and the
    moment the link was seen `up` again;
(d) live data keeps arriving during the drain: for every tag, a record published after the
    restore is inserted before the last backlog record. PostgreSQL has no historical flag: the
    destination ignores `historical` (the lane shows only in the order).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from tests.faultproxy import FaultProxy
from tests.service.conftest import spawn
from tests.upstream.pg import (
    T0_MS,
    Publisher,
    count,
    mqtt_to_pg_spec,
    outbox_status,
    sql,
    write_pipeline,
)
from tests.waiting import wait_for

OUTAGE_S = float(os.environ.get("OUTAGE_S", "20"))
BACKFILL_ROWS_PER_S = int(os.environ.get("OUTAGE_BACKFILL_ROWS_PER_S", "500"))
# the forwarder's back-off doubles to 30 s: it reconnects at most ~33 s after the restore
pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(180 + 3 * OUTAGE_S)]
TAGS = 4
PERIOD_S = 0.02  # 50 records a second per tag: 200 rows/s
SLOW_S = 60.0  # a loaded 2-core machine: a service starts, a link comes back, within this long
ON_ITS_WAY_S = 5.0  # published before the restore but accepted after the reconnect: at most this long before


def by_insertion(table: str) -> dict[str, list[tuple[int, int]]]:
    """Per tag, (record number n, _id) in insertion order."""
    rows = sql(f'SELECT tag, (extract(epoch FROM timestamp) * 1000)::bigint, _id FROM "{table}" ORDER BY _id')
    out: dict[str, list[tuple[int, int]]] = {}
    for tag, ms, ident in rows:
        out.setdefault(tag, []).append(((ms - T0_MS) // round(PERIOD_S * 1000), ident))
    return out


def lanes(ns: list[int]) -> int | None:
    """The cut c of a tag's insertion-ordered record numbers: the records <= c and those > c each
    in ascending order (None: all in order). Fails when no single cut explains the order."""
    # a record inserted before a smaller one must be live (> c), and so is everything above it
    overtaking, low = [], float("inf")
    for n in reversed(ns):
        if n > low:
            overtaking.append(n)
        low = min(low, n)
    if not overtaking:
        return None
    cut = min(overtaking) - 1
    backlog = [n for n in ns if n <= cut]
    live = [n for n in ns if n > cut]
    assert backlog == sorted(backlog), f"backlog out of order (cut {cut})"
    assert live == sorted(live), f"live records out of order (cut {cut})"
    return cut


def test_outage_drains_in_order_live_first_exactly_once(table, tmp_path):
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "data"
    proxy = FaultProxy("127.0.0.1", 5432).start()
    spec = mqtt_to_pg_spec(
        prefix, table, name="outage", port=proxy.port, backfill_rows_per_s=BACKFILL_ROWS_PER_S
    )
    pipelines = write_pipeline(tmp_path, spec)
    publisher = Publisher(prefix, tags=TAGS, period_s=PERIOD_S)
    publisher.start()
    service = None
    try:
        service = spawn(data_dir, tmp_path / "serve.out", "--pipelines", str(pipelines))
        service.wait_ready()
        wait_for(lambda: count(table) > 0, SLOW_S, what="the first delivery")

        # ---- (a) the outage
        proxy.refuse()
        cut_at = time.monotonic()
        down = wait_for(
            lambda: (s := outbox_status(data_dir)) and s["link_state"] == "down" and s,
            SLOW_S,
            what="the link state down",
        )
        assert down["link_detail"], down
        before = count(table)  # a delivery in flight may have committed before the reset; none since
        last = down
        samples = 0
        while time.monotonic() < cut_at + OUTAGE_S or samples < 2:
            time.sleep(1.0)  # the outage's length is the test's parameter, not a wait on a condition
            now = outbox_status(data_dir)
            assert now["link_state"] in ("down", "connecting"), now
            assert now["pending_records"] >= last["pending_records"], (last, now)
            assert count(table) == before
            last, samples = now, samples + 1
        assert last["pending_records"] > down["pending_records"], (down, last)
        assert last["appended_records"] > down["appended_records"], (down, last)
        assert last["oldest_pending_age_s"] >= OUTAGE_S / 2, last

        # ---- the restore
        proxy.pass_through()
        restored_at = time.monotonic()
        n_restore = len(publisher.sent_at)  # records n >= this were published after the restore
        wait_for(
            lambda: outbox_status(data_dir)["link_state"] == "up", SLOW_S, what="the link state up again"
        )
        up_seen = time.monotonic()

        # ---- (b) the drain completes (every record before the restore is there), then the rest
        def backlog_done() -> bool:
            got = by_insertion(table)
            return len(got) == TAGS and all(
                (ns := sorted(n for n, _ in rows if n < n_restore)) == list(range(ns[0], n_restore))
                for rows in got.values()
            )

        backlog_s = (OUTAGE_S + 35) * TAGS / PERIOD_S / BACKFILL_ROWS_PER_S  # its rows at the throttle
        wait_for(backlog_done, SLOW_S + 2 * backlog_s, interval=0.5, what="the drain")
        publisher.stop()
        status = wait_for(
            lambda: (
                (s := outbox_status(data_dir))["pending_records"] == 0
                and count(table) == s["appended_records"]
                and s
            ),
            SLOW_S,
            what="everything accepted delivered",
        )
        assert service.stop() == 0, service.output()
    finally:
        publisher.stop()
        proxy.stop()
        if service is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)

    # (b) exactly once, nothing lost
    assert status["dropped_records"] == 0 and status["quarantined_records"] == 0, status
    total = count(table)
    assert total == status["appended_records"], (total, status)
    distinct = sql(f'SELECT count(*) FROM (SELECT DISTINCT tag, timestamp FROM "{table}") d')[0][0]
    assert distinct == total
    got = by_insertion(table)
    assert len(got) == TAGS, sorted(got)
    for tag, rows in got.items():
        ns = sorted(n for n, _ in rows)
        assert ns == list(range(ns[0], ns[-1] + 1)), f"{tag}: a hole"
        assert ns[0] < n_restore - OUTAGE_S / PERIOD_S, f"{tag}: nothing from before the outage"

    # (c) the order per tag: two lanes, one cut between the restore and the reconnect
    sent_at = publisher.sent_at
    cuts = {}
    for tag, rows in got.items():
        cut = lanes([n for n, _ in rows])
        # (d) live first: each tag has live records inserted before the last backlog record
        assert cut is not None, f"{tag}: the backlog finished before any live record arrived"
        cuts[tag] = cut
        assert restored_at - ON_ITS_WAY_S <= sent_at[cut] <= up_seen, (
            f"{tag}: cut at record {cut}, published {sent_at[cut] - restored_at:+.2f} s from the restore,"
            f" link seen up {up_seen - restored_at:.2f} s after it"
        )
        last_backlog = max(i for n, i in rows if n <= cut)
        first_after_restore = min(i for n, i in rows if n > cut and n >= n_restore)
        assert first_after_restore < last_backlog, f"{tag}: no record after the restore overtook the backlog"
    # one cut for all tags (one reconnect): the tags' cuts lie within a micro-batch or two
    assert max(cuts.values()) - min(cuts.values()) <= 1.0 / PERIOD_S, cuts
    print(
        f"outage {OUTAGE_S:g} s: {total} records once; restore at record {n_restore}, lanes cut at"
        f" {sorted(cuts.values())}; the backlog drained at {BACKFILL_ROWS_PER_S} rows/s behind live data"
    )
