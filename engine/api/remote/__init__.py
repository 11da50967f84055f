"""`RemoteEngine`: the `EngineAPI` of a running `aggregator serve`, over its HTTP API and event
stream (architecture: one front door). The CLI uses it when a service owns the data directory
(engine/api/connect.py); the desktop app uses it with `aggregator gui --attach URL`.

One module per sub-API, each a thin translation of the Protocol's calls into the service's routes;
`client.py` holds the HTTP client (bearer token, one-line errors) and the event-stream reader.
"""

from __future__ import annotations

from engine.api.remote.engine import RemoteEngine

__all__ = ["RemoteEngine"]
