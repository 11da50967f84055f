"""The disk cap end to end: a streaming pipeline (MQTT JSON from a publisher in this test, 1 kB of
text per value) runs under `aggregator serve` into PostgreSQL through the fault proxy, with the
smallest cap (`max_bytes` 1 MiB, `overflow: drop_oldest`). The proxy refuses the link until the
outbox has been dropping for a while, then lets it through.

Asserted: while the link is down and the outbox full, its disk footprint (the file and its WAL,
`file_bytes`) stays within 5% of the cap, over and under; the drops are counted in `aggregator outbox status` and in `/metrics`,
and alarmed (the service's log says the outbox is full); after the restore, everything left is
delivered once (`appended_records - dropped_records` rows), and every hole the drops left in a
tag begins with a gap record (quality `bad`, reason `dropped`, no value) in PostgreSQL.
(The outbox's unit tests cover the cap in detail: tests/outbox/test_store.py.)
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

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

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(240)]
CAP = 1024 * 1024  # the smallest max_bytes
TAGS = 4
PERIOD_S = 0.02  # 4 tags x 50 values/s x 1 kB: ~200 kB/s, the cap is full within ~6 s
FULL_SAMPLES = 5  # status and file size read this many times, a second apart, while dropping
SLOW_S = 60.0
QUIET_S = 1.0


def payload(n: int, k: int) -> dict:
    # text that LZ4 cannot shrink much (hex of random bytes), so the cap fills in seconds
    return {"v": os.urandom(500).hex(), "t": T0_MS + 20 * n}


def dropped_metric(text: str) -> float:
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aggregator_outbox_dropped_records_total{") and 'destination="central"' in line
    ]
    assert len(found) == 1, [line for line in text.splitlines() if "dropped" in line]
    return found[0]


def quiet(data_dir: Path) -> Callable[[], bool]:
    """A condition: true once `appended_records` has not moved for QUIET_S (5 x the pipeline's
    max_latency_ms: a stopped publisher's last micro-batch is committed well within it)."""
    seen: list = []

    def condition() -> bool:
        appended, now = outbox_status(data_dir)["appended_records"], time.monotonic()
        if not seen or seen[0] != appended:
            seen[:] = [appended, now]
        return now - seen[1] >= QUIET_S

    return condition


def test_disk_cap_holds_counts_alarms_and_writes_gap_records(table, tmp_path):
    prefix = f"cap-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "data"
    proxy = FaultProxy("127.0.0.1", 5432).start()
    spec = mqtt_to_pg_spec(
        prefix, table, name="diskcap", port=proxy.port, max_bytes=CAP, overflow="drop_oldest"
    )
    pipelines = write_pipeline(tmp_path, spec)
    publisher = Publisher(prefix, tags=TAGS, period_s=PERIOD_S, payload=payload)
    publisher.start()
    service = None
    try:
        service = spawn(data_dir, tmp_path / "serve.out", "--pipelines", str(pipelines))
        service.wait_ready()
        wait_for(lambda: count(table) > 0, SLOW_S, what="the first delivery")
        proxy.refuse()
        # Both at once: a delivery that was under way when the link was cut may still end well
        # (PostgreSQL answered before the cut; on a loaded machine the forwarder's thread may
        # take seconds to see it), and until the next attempt fails the link is rightly "up".
        first = wait_for(
            lambda: (
                (s := outbox_status(data_dir))
                and s["dropped_records"] > 0
                and s["link_state"] in ("down", "connecting")
                and s
            ),
            SLOW_S,
            what="the outbox full and dropping, with the link down",
        )
        samples = []
        while len(samples) < FULL_SAMPLES:
            time.sleep(1.0)  # the cap is held over time: read it a few times while data keeps coming
            s = outbox_status(data_dir)
            db_file = Path(s["file"]).stat().st_size
            samples.append((s["pending_bytes"], db_file, s["file_bytes"], s["dropped_records"]))
            # The cap is the disk footprint: the file and its WAL, read between two transactions.
            assert CAP * 0.95 <= s["file_bytes"] <= CAP * 1.05, samples
        assert samples[-1][3] > first["dropped_records"], samples  # still dropping, still counted
        metric = dropped_metric(service.get("/metrics").text)
        assert metric >= samples[-1][3], (metric, samples)
        alarm = wait_for(
            lambda: re.search(r"outbox \S+ is full: dropped the oldest \d+ records", service.output()),
            SLOW_S,
            what="the alarm line in the service's log",
        )
        assert "gap records" in service.output()[alarm.start() :].splitlines()[0]

        # The publisher stops, and its last values are accepted, before the link returns: an
        # append that drops while the forwarder has the oldest batches in flight would count them
        # dropped *and* deliver them (a race in engine/outbox/store.py, reported; not tested here).
        publisher.stop()
        wait_for(quiet(data_dir), SLOW_S, what="the last values accepted")
        at_restore = outbox_status(data_dir)
        proxy.pass_through()
        status = wait_for(
            lambda: (s := outbox_status(data_dir))["pending_records"] == 0 and s,
            SLOW_S,
            what="everything left delivered",
        )
        assert service.stop() == 0, service.output()
    finally:
        publisher.stop()
        proxy.stop()
        if service is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)

    assert status["quarantined_records"] == 0, status
    figures = {
        k: (at_restore[k], status[k])
        for k in ("appended_records", "dropped_records", "forwarded_records", "pending_records")
    }
    distinct = sql(f'SELECT count(DISTINCT _key) FROM "{table}"')[0][0]
    assert distinct == count(table)
    # Every record the outbox kept is there once. A batch whose delivery had no answer (the link
    # cut after PostgreSQL committed it) stays pending, and may then be dropped at the cap: it is
    # counted dropped though it arrived (its gap record, with the same key, is then refused as a
    # duplicate). So the table holds at least what was kept, and never more than was accepted.
    kept = status["appended_records"] - status["dropped_records"]
    assert kept <= count(table) <= status["appended_records"], (count(table), figures)
    rows = sql(
        f"SELECT tag, (extract(epoch FROM timestamp) * 1000)::bigint, quality, reason, value, value_text"
        f' FROM "{table}" ORDER BY tag, timestamp'
    )
    good: dict[str, set[int]] = {}
    gaps: dict[str, set[int]] = {}
    for tag, ms, quality, reason, value, text in rows:
        n = (ms - T0_MS) // 20
        if quality == "bad":
            assert reason == "dropped" and value is None and text is None, (tag, n, quality, reason, value)
            gaps.setdefault(tag, set()).add(n)
        else:
            assert quality == "good" and text, (tag, n, quality)
            good.setdefault(tag, set()).add(n)
    assert sorted(gaps) == sorted(good) and len(good) == TAGS, (sorted(gaps), sorted(good))
    for tag, ns in good.items():
        assert not gaps[tag] & ns, f"{tag}: a gap record where a value is"
        holes = [n for n in range(min(ns), max(ns) + 1) if n not in ns and n - 1 in ns]  # each hole's start
        assert holes, f"{tag}: nothing dropped"
        assert all(n in gaps[tag] for n in holes), f"{tag}: holes {holes}, gap records {sorted(gaps[tag])}"
    print(
        f"disk cap {CAP} B: pending/file/file+wal bytes while full {samples}; {status['dropped_records']}"
        f" dropped, {sum(map(len, gaps.values()))} gap records in PostgreSQL"
    )
