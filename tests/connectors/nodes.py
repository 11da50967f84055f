"""Building a connector's nodes in a test as a run builds them: the registry's class, its config
model validating the raw config, then make_source / make_sink."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import polars as pl

from engine.connectors import registry
from engine.context import RunContext


def run_context(tmp_path: Path, **kw: Any) -> RunContext:
    return RunContext(
        run_id="r" + uuid.uuid4().hex[:6], pipeline="p", data_dir=tmp_path, base_dir=tmp_path, **kw
    )


def source(kind: str, ctx: RunContext, raw: dict[str, Any], name: str = "src"):
    cls = registry.get(kind)
    return cls.make_source(cls.SourceConfig.model_validate(raw), ctx, name)


def sink(kind: str, ctx: RunContext, raw: dict[str, Any], name: str = "dst"):
    cls = registry.get(kind)
    return cls.make_sink(cls.SinkConfig.model_validate(raw), ctx, name)


def write_all(node: Any, batches: tuple[pl.DataFrame, ...]) -> None:
    """Open, write every batch, close (commit); abort on any error, as the executor does."""
    node.open()
    try:
        for b in batches:
            node.write(b)
        node.close()
    except BaseException:
        node.abort()
        raise


def read_all(node: Any, **kw: Any) -> pl.DataFrame:
    return pl.concat(list(node.read(**kw)))
