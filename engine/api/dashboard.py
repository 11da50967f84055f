"""EngineAPI: the dashboard calls (see engine/api/core.py)."""

from __future__ import annotations

from engine.api.core import EngineCore


class DashboardAPI(EngineCore):
    """The dashboard part of the in-process engine."""
