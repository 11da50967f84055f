"""Frames over the wire as Arrow IPC streams (`application/vnd.apache.arrow.stream`), not JSON rows.

The desktop app attached to a service (engine/api/remote/) reads live windows, historian buckets and
table pages with these routes: a frame keeps its column types (times, integers, nulls) and costs one
buffer copy to write and read, where JSON rows would cost a Python object per value on both sides.
Small scalars that go with a frame (a page's total, whether a query was cut) ride in headers.
"""

from __future__ import annotations

import io
from typing import Any

from fastapi import Response

ARROW_STREAM = "application/vnd.apache.arrow.stream"
# OpenAPI: what an Arrow answer looks like (a binary body of that media type).
ARROW_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        "description": "an Arrow IPC stream (read it with polars.read_ipc_stream or pyarrow.ipc)",
    }
}


def arrow_response(frame: Any, headers: dict[str, str] | None = None) -> Response:
    """A Polars frame as an Arrow IPC stream answer."""
    buffer = io.BytesIO()
    frame.write_ipc_stream(buffer)
    return Response(buffer.getvalue(), media_type=ARROW_STREAM, headers=headers)
