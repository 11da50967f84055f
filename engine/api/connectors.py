"""EngineAPI: the connectors calls (see engine/api/core.py)."""

from __future__ import annotations

from engine.api.core import EngineCore


class ConnectorsAPI(EngineCore):
    """The connectors part of the in-process engine."""
