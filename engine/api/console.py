"""Console lines for clients that print what a run does (`aggregator run`, `aggregator serve`):
the engine's own wording of source session changes, re-exported here so that clients need nothing
below `engine.api`."""

from __future__ import annotations

from engine.streaming.run import SourceStateLines

__all__ = ["SourceStateLines"]
