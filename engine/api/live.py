"""EngineAPI: the live calls (see engine/api/core.py)."""

from __future__ import annotations

from engine.api.core import EngineCore


class LiveAPI(EngineCore):
    """The live part of the in-process engine."""
