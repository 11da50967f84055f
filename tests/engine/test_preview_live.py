"""A live source's preview sample (StreamingSource.sample): it listens `seconds`, and, while a
source still coming up has handed over nothing (a slow connect, a device's first poll on a loaded
machine), up to `first_within` for its first batch; a source that is down is not waited for."""

from __future__ import annotations

import threading
import time

from engine.connectors.base import ConnectorConfig, StreamingSource
from engine.context import RunContext
from engine.tags import TagBatchBuilder


class _Config(ConnectorConfig):
    first_after_s: float = 0.0
    down: bool = False


class SlowSource(StreamingSource):
    """Says `connecting`, then after `first_after_s` hands over one value (or, `down`, says `lost`)."""

    config: _Config

    def start(self, emit) -> None:
        self._halt = threading.Event()
        self.set_state("connecting", "slow://test")

        def run() -> None:
            if self.config.down:
                self.set_state("lost", "slow://test: connection refused")
                return
            if self._halt.wait(self.config.first_after_s):
                return
            builder = TagBatchBuilder(self.name)
            builder.add("slow.value", 42.0)
            self.set_state("connected", "slow://test")
            emit(builder.take_batch())

        self._thread = self.spawn(run)

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)
        self.set_state("stopped")


def _sample(**config) -> tuple[float, list[float]]:
    source = SlowSource(_Config(**config), RunContext(), "slow")
    began = time.monotonic()
    frame = source.sample(seconds=0.3, limit=10, first_within=8.0)
    return time.monotonic() - began, frame["value"].to_list()


def test_a_source_slower_than_the_sample_is_waited_for_until_its_first_values():
    took, values = _sample(first_after_s=1.0)
    assert values == [42.0]
    assert took < 5.0  # it stopped at the first batch, not at first_within


def test_a_source_that_is_down_is_not_waited_for():
    took, values = _sample(down=True)
    assert values == [] and took < 2.0


def test_without_first_within_the_sample_ends_after_seconds():
    source = SlowSource(_Config(first_after_s=2.0), RunContext(), "slow")
    began = time.monotonic()
    frame = source.sample(seconds=0.3, limit=10)
    assert frame.height == 0 and time.monotonic() - began < 1.5
