"""Loads every built-in transformation type (importing a module registers its types)."""

from __future__ import annotations

from typing import Any

from engine.transforms import (  # noqa: F401  (imported for their @register side effect)
    aggregate,
    calculation,
    code,
    combine,
    conditional,
    datetime_ops,
    fields,
    filtering,
    hashing,
    mapping,
    reshape,
    text,
    timeseries,
    ts_deadband,
    ts_power,
    ts_quality,
    validation,
)
from engine.transforms.base import Transform
from engine.transforms.registry import get


def build(config: dict[str, Any], node_id: str = "node") -> Transform:
    """A ready transformation from a config dict.

    Raises KeyError for an unknown `type` and pydantic's ValidationError for a bad config (its error
    locations are relative to the dict, e.g. ("parameters", "digits")).
    """
    cls = get(config.get("type", ""))
    return cls(cls.Config.model_validate(config), node_id)
