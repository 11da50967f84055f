"""EngineAPI: the pipelines calls (see engine/api/core.py)."""

from __future__ import annotations

from engine.api.core import EngineCore


class PipelinesAPI(EngineCore):
    """The pipelines part of the in-process engine."""
