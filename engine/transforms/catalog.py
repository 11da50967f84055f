"""Builds a transformation node from its config. Each built-in type's module is imported when a
config names it (engine/transforms/registry.py `BUILTIN`); `registry.all_types()` imports them all."""

from __future__ import annotations

from typing import Any

from engine.transforms.base import Transform
from engine.transforms.registry import get


def build(config: dict[str, Any], node_id: str = "node") -> Transform:
    """A ready transformation from a config dict.

    Raises KeyError for an unknown `type` and pydantic's ValidationError for a bad config (its error
    locations are relative to the dict, e.g. ("parameters", "digits")).
    """
    cls = get(config.get("type", ""))
    return cls(cls.Config.model_validate(config), node_id)
