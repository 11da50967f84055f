"""Field-protocol connectors (OPC UA, Modbus, DNP3, MQTT/Sparkplug B) and their simulators.

Each protocol is a folder: config model, driver, simulator, README and golden cases. Connectors
register themselves with the engine's registry when their `connector` module is imported;
`register_all()` (the app calls it at start-up) hands the registry a loader that imports every
protocol's connector module when a connector type is first asked for (engine/connectors/registry.py
`defer`), so start-up (`aggregator serve` up to `/health`) does not import them. The connector
modules import their protocol libraries (asyncua, pymodbus...) lazily too.
"""

from __future__ import annotations

import importlib
import importlib.util

PROTOCOLS = ("opcua", "modbus", "dnp3", "mqtt")


_deferred = False


def register_all() -> list[str]:
    """Register every protocol's connectors with the engine's registry: their modules are imported
    when the registry is first asked (`registry.get`/`names`). Returns the protocols found."""
    global _deferred
    found = [name for name in PROTOCOLS if _has_connector(name)]
    if not _deferred:
        from engine.connectors import registry

        registry.defer(lambda: _import_connectors(found))
        _deferred = True
    return found


def _has_connector(name: str) -> bool:
    return bool(
        importlib.util.find_spec(f"protocols.{name}")
        and importlib.util.find_spec(f"protocols.{name}.connector")
    )


def _import_connectors(names: list[str]) -> None:
    for name in names:
        importlib.import_module(f"protocols.{name}.connector")
