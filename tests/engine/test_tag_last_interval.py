"""The write of `tag_last` holds the batches' lock `WRITE_DUTY` of the time at most (issue 12): a
write that held it long stretches the interval to the next one, up to `WRITE_EVERY_MAX`; a quick
one leaves it at `last_every`. Real DuckDB; the slow write is a real slow slice (it sleeps holding
the batches' lock, as a large upsert on a loaded machine does)."""

from __future__ import annotations

import math
import time

import pytest

from engine.store import tag_newest
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from tests.engine.test_tag_last_promise import batch, stored_table


class SlowSlices(TagHistorian):
    """Each slice of a write of `tag_last` takes `slow` seconds more, inside the batches' lock."""

    slow = 0.0

    def _write_slice(self, cur, part, last, clear_below) -> None:
        time.sleep(self.slow)
        super()._write_slice(cur, part, last, clear_below)


@pytest.fixture
def slow(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    store = SlowSlices(historian)
    store.last_every = math.inf
    yield store
    historian.close()


def test_a_quick_write_keeps_the_interval_and_a_slow_one_stretches_it(slow):
    slow.append(batch([("a", 1.0, 10), ("b", 2.0, 10)]))
    slow.write_last()
    slow.last_every = 5.0
    assert slow.last_took < 5.0 * tag_newest.WRITE_DUTY  # two tags: a few ms
    assert slow.every() == 5.0

    slow.slow = 0.3  # the write holds the lock >= 0.3 s: the next may come 0.3 / WRITE_DUTY later
    slow.write_slice = 1  # two slices of one tag: both are counted
    slow.append(batch([("a", 3.0, 20), ("b", 4.0, 20)]))
    slow.write_last()
    assert slow.last_took >= 0.6
    assert slow.every() == min(tag_newest.WRITE_EVERY_MAX, slow.last_took / tag_newest.WRITE_DUTY)
    assert slow.every() >= 0.6 / tag_newest.WRITE_DUTY - 1e-9

    slow.slow = 3.0  # a write of 6 s: the interval stops at the cap
    slow.append(batch([("a", 5.0, 30), ("b", 6.0, 30)]))
    slow.write_last()
    assert slow.every() == tag_newest.WRITE_EVERY_MAX


def test_after_a_slow_write_a_commit_past_last_every_does_not_write(slow):
    slow.slow = 0.15
    slow.write_slice = 1
    slow.append(batch([("a", 1.0, 10), ("b", 2.0, 10)]))
    slow.write_last()  # >= 0.3 s under the lock: the next write is >= 15 s away
    assert stored_table(slow) == {"a": 1.0, "b": 2.0}
    slow.last_every = 5.0
    slow.newest.last_write = time.monotonic() - 6.0  # past last_every, not past the stretched one
    slow.append(batch([("a", 3.0, 20)]))  # `append` writes the table itself when it is due
    assert stored_table(slow) == {"a": 1.0, "b": 2.0}  # not due: kept only
    assert dict(slow.last_values().select("tag", "value").rows()) == {"a": 3.0, "b": 2.0}
    slow.newest.last_write = time.monotonic() - slow.every()  # now it is due
    slow.append(batch([("b", 4.0, 20)]))
    assert stored_table(slow) == {"a": 3.0, "b": 4.0}


def test_zero_and_infinite_intervals_stay_as_set(slow):
    slow.last_took = 10.0
    slow.last_every = 0.0  # a write at every commit
    assert slow.every() == 0.0
    slow.last_every = math.inf  # only when asked
    assert slow.every() == math.inf
