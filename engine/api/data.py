"""EngineAPI: the data calls (see engine/api/core.py)."""

from __future__ import annotations

from engine.api.core import EngineCore


class DataAPI(EngineCore):
    """The data part of the in-process engine."""
