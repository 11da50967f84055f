"""Pipeline documents in a request body: JSON, or YAML with `Content-Type: application/yaml`."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.http.errors import ApiError

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
DOCUMENT_SCHEMA = {
    "type": "object",
    "description": "A pipeline document, linear or graph form (`aggregator schema` prints its JSON Schema).",
}


def document_body(description: str = "the pipeline document") -> dict[str, Any]:
    """`openapi_extra` of a route that takes a pipeline document as its body."""
    return {
        "requestBody": {
            "required": True,
            "description": f"{description}: JSON, or YAML with Content-Type application/yaml",
            "content": {
                "application/json": {"schema": DOCUMENT_SCHEMA},
                "application/yaml": {"schema": DOCUMENT_SCHEMA},
            },
        }
    }


async def read_document(request: Request) -> dict[str, Any]:
    """The body as a document (a mapping), parsed by the engine's own reader (its size, nesting and
    duplicate-key guards); a one-line 4xx when it is not one."""
    from engine.spec.io import parse_document

    kind = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    raw = await request.body()
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ApiError(f"body: {len(raw)} bytes (allowed: up to {MAX_DOCUMENT_BYTES})", 413)
    if kind not in YAML_TYPES and kind not in ("application/json", "") and not kind.endswith("+json"):
        raise ApiError(f"body: content type '{kind}' (allowed: application/json, application/yaml)", 415)
    if not raw.strip():
        raise ApiError("body: empty (allowed: a pipeline document as JSON or YAML)", 422)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(f"body: not UTF-8 text (byte {exc.start + 1})", 422) from None
    return parse_document(text, "body", yaml_syntax=kind in YAML_TYPES)
