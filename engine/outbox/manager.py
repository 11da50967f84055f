"""The outboxes of one data directory in this process, and their forwarders.

One `OutboxManager` per data directory per process (`manager_for(data_dir)`): it opens each
destination's outbox once, and runs one forwarder thread per destination that has a target (a
live pipeline registered it, or the service found pending data and could rebuild its target).

`serving` is set by the service (`engine.api` outbox sub-API `start()`): every pipeline it runs
defaults to `store_and_forward`; a one-shot `aggregator run` without a service defaults to
`direct` (engine/outbox/sinks.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.outbox.store import (
    OutboxCorrupt,
    OutboxStore,
    destination_id,
    outbox_dir,
    outbox_path,
    parse_name,
)

log = logging.getLogger("aggregator.outbox")

_lock = threading.Lock()
_managers: dict[str, OutboxManager] = {}


def manager_for(data_dir: Path | str) -> OutboxManager:
    key = str(Path(data_dir).resolve())
    with _lock:
        manager = _managers.get(key)
        if manager is None:
            manager = _managers[key] = OutboxManager(Path(data_dir))
        return manager


def _say(level: str, message: str) -> None:
    log.log(logging.getLevelName(level.upper()), message)


class OutboxManager:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.serving = False
        self._lock = threading.RLock()
        self._stores: dict[str, OutboxStore] = {}
        self._forwarders: dict[str, Any] = {}
        self._targets: dict[str, tuple[Callable[[], Any], Any]] = {}
        self.resolver: Callable[[str, str], tuple[Callable[[], Any], Any] | None] | None = None
        self.say: Callable[[str, str], None] = _say
        self.repair = True  # a corrupt outbox is set aside; False for a reader beside a service

    # ---- stores ------------------------------------------------------------------------------
    def store(self, pipeline: str, destination: str, connector_type: str | None = None) -> OutboxStore:
        did = destination_id(pipeline, destination)
        with self._lock:
            store = self._stores.get(did)
            if store is None:
                store = OutboxStore(
                    outbox_path(self.data_dir, pipeline, destination),
                    pipeline=pipeline,
                    destination=destination,
                    connector_type=connector_type,
                    log=self.say,
                    repair=self.repair,
                )
                self._stores[did] = store
            return store

    def destinations(self) -> list[tuple[str, str]]:
        """Every destination with an outbox file in the data directory."""
        folder = outbox_dir(self.data_dir)
        found = []
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                names = parse_name(path)
                if names is not None:
                    found.append(names)
        return found

    def status(self) -> list[dict[str, Any]]:
        out = []
        for pipeline, destination in self.destinations():
            try:
                store = self.store(pipeline, destination)
            except OutboxCorrupt as exc:
                out.append(
                    {
                        "pipeline": pipeline,
                        "destination": destination,
                        "link_state": "corrupt",
                        "link_detail": str(exc),
                    }
                )
                continue
            entry = store.status()
            entry["pipeline"], entry["destination"] = pipeline, destination
            fwd = self._forwarders.get(destination_id(pipeline, destination))
            entry["forwarder"] = "running" if fwd is not None and fwd.is_alive() else "stopped"
            out.append(entry)
        return out

    # ---- forwarders --------------------------------------------------------------------------
    def register(self, pipeline: str, destination: str, make_target: Callable[[], Any], config: Any) -> None:
        """A live pipeline's destination: its forwarder runs (started if it was not)."""
        did = destination_id(pipeline, destination)
        with self._lock:
            self._targets[did] = (make_target, config)
            self._ensure(pipeline, destination)

    def _ensure(self, pipeline: str, destination: str) -> None:
        from engine.outbox.forwarder import Forwarder

        did = destination_id(pipeline, destination)
        fwd = self._forwarders.get(did)
        if fwd is not None and fwd.is_alive():
            fwd.update(*self._targets[did])
            return
        make_target, config = self._targets[did]
        fwd = Forwarder(self.store(pipeline, destination), make_target, config, say=self.say)
        self._forwarders[did] = fwd
        fwd.start()

    def forwarder(self, pipeline: str, destination: str) -> Any:
        return self._forwarders.get(destination_id(pipeline, destination))

    def start(
        self, resolver: Callable[[str, str], tuple[Callable[[], Any], Any] | None] | None = None
    ) -> None:
        """The service starts: every pipeline defaults to store_and_forward, and each destination
        with pending data gets its forwarder (its target rebuilt by `resolver(pipeline, dest)`)."""
        self.serving = True
        if resolver is not None:
            self.resolver = resolver
        for pipeline, destination in self.destinations():
            did = destination_id(pipeline, destination)
            with self._lock:
                if did in self._forwarders and self._forwarders[did].is_alive():
                    continue
                store = self.store(pipeline, destination)
                if not store.pending()[0]:
                    continue
                made = self._targets.get(did)
                if made is None and self.resolver is not None:
                    try:
                        made = self.resolver(pipeline, destination)
                    except Exception as exc:
                        self.say("warning", f"outbox {did}: cannot rebuild its destination: {exc}")
                        made = None
                if made is None:
                    self.say(
                        "warning",
                        f"outbox {did}: {store.pending()[1]} records wait, but the pipeline is not known:"
                        " they are forwarded when it runs again",
                    )
                    continue
                self._targets[did] = made
                self._ensure(pipeline, destination)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every forwarder (each ends its delivery in flight) and close the stores."""
        self.serving = False
        with self._lock:
            forwarders = list(self._forwarders.values())
            self._forwarders.clear()
        for fwd in forwarders:
            fwd.stop()
        for fwd in forwarders:
            fwd.join(timeout)

    def close(self) -> None:
        self.stop()
        with self._lock:
            for store in self._stores.values():
                with contextlib.suppress(Exception):
                    store.close()
            self._stores.clear()
        with _lock:
            for key, value in list(_managers.items()):
                if value is self:
                    del _managers[key]
