"""`hashing`: replace fields by a salted cryptographic digest (pseudonymisation)."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import polars as pl
from pydantic import Field

from engine import paths
from engine.context import NodeContext
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.casting import iso_text
from engine.transforms.common import field
from engine.transforms.registry import register

_ALGORITHMS: dict[str, Any] = {
    "sha256": hashlib.sha256,
    "blake2b": hashlib.blake2b,
}


class HashingConfig(TransformConfig):
    type: Literal["hashing"] = "hashing"
    field_names: list[str] = Field(min_length=1, description="Fields replaced by their hex digest.")
    algorithm: Literal["sha256", "blake2b"] = Field("sha256", description="Digest (blake2b: 64-byte digest).")
    salt_secret: str | None = Field(
        None, description="Name of the secret whose value salts the hash (never the salt itself)."
    )


@register
class Hashing(Transform):
    """Replace each field by the hex digest of salt + value (as UTF-8 text); nulls stay null."""

    type = "hashing"
    title = "Hash fields"
    category = "clean"
    Config = HashingConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: HashingConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        digest = _ALGORITHMS[cfg.algorithm]
        salt_cache: list[bytes] = []

        def salt() -> bytes:
            # Read on first use, when data flows: validating a spec needs no secret store.
            if not salt_cache:
                salt_cache.append(ctx.secret(cfg.salt_secret).encode() if cfg.salt_secret else b"")
            return salt_cache[0]

        def hash_batch(values: pl.Series) -> pl.Series:
            # Polars' own hash() is not cryptographic, so hashlib runs per value here.
            prefix = salt()
            return pl.Series(
                [None if v is None else digest(prefix + v.encode()).hexdigest() for v in values],
                dtype=pl.String,
            )

        columns = {}
        for path in cfg.field_names:
            expr, dtype = field(path, schema, "field_names")
            columns[path] = iso_text(expr, dtype).map_batches(
                hash_batch, return_dtype=pl.String, is_elementwise=True
            )
        result = lf
        for path, value in columns.items():
            result = paths.assign(result, path, value, schema)
        return {OUT: result}
