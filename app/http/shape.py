"""Answers as JSON: frames as rows, non-finite floats as null, anything else as text."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from typing import Any

from fastapi.responses import JSONResponse

MAX_FRAME_ROWS = 10_000


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _text(value: Any) -> Any:
    """What json cannot write itself: times as ISO 8601, bytes as base64, anything else as text."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _clean(value.tolist())
    return str(value)


def safe_json(content: Any) -> str:
    """JSON that never fails on a value: NaN and infinities become null, dates and paths text."""
    return json.dumps(
        _clean(content), ensure_ascii=False, allow_nan=False, default=_text, separators=(",", ":")
    )


class SafeJSONResponse(JSONResponse):
    """An answer written with `safe_json`."""

    def render(self, content: Any) -> bytes:
        return safe_json(content).encode("utf-8")


def frame_rows(frame: Any, limit: int = MAX_FRAME_ROWS) -> list[dict[str, Any]]:
    """A Polars frame's first `limit` rows as objects (the response writes times as ISO 8601 text,
    bytes as base64). An answer is at most `limit` rows, so the rows are built in Python here."""
    if frame is None:
        return []
    return frame.head(limit).to_dicts()


def frame_columns(frame: Any) -> list[dict[str, str]]:
    return [{"name": name, "type": str(dtype)} for name, dtype in frame.schema.items()]
