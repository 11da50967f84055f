"""EngineAPI: the runs calls (see engine/api/core.py)."""

from __future__ import annotations

from engine.api.core import EngineCore


class RunsAPI(EngineCore):
    """The runs part of the in-process engine."""
