"""Arrow answers of the service (app/http/arrow.py) read back into Polars frames, for the live and
data sub-APIs of `RemoteEngine`. The JSON calls go through `ServiceClient.request`; these need the
raw body (and its headers), with the same errors."""

from __future__ import annotations

import io
from typing import Any

import httpx

from engine.api.remote.client import ServiceClient, ServiceUnavailable, error_of

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def raw(client: ServiceClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The answer of `method path` whatever its body; the engine's error for a 4xx/5xx."""
    http: httpx.Client = client._http  # the client's pool and token
    try:
        response = http.request(method, path, **kwargs)
    except httpx.TimeoutException:
        raise ServiceUnavailable(f"{client.url}: no answer within {http.timeout.read} s") from None
    except httpx.TransportError as exc:
        raise ServiceUnavailable(
            f"{client.url}: cannot reach the service ({str(exc) or type(exc).__name__})"
        ) from None
    if response.status_code >= 400:
        raise error_of(response)
    return response


def frame(response: httpx.Response):
    """An Arrow IPC stream answer as a Polars frame."""
    import polars as pl

    kind = response.headers.get("content-type", "")
    if not kind.startswith(ARROW_STREAM):
        raise ServiceUnavailable(
            f"{response.request.url.copy_with(query=None)}: the service answered {kind or 'no content type'},"
            f" not {ARROW_STREAM} (an older service?)"
        )
    return pl.read_ipc_stream(io.BytesIO(response.content))


def get_frame(client: ServiceClient, path: str, **params: Any):
    """(frame, headers) of a GET answering Arrow."""
    response = raw(client, "GET", path, params={k: v for k, v in params.items() if v is not None})
    return frame(response), response.headers
