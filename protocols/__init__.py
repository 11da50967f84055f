"""Field-protocol connectors (OPC UA, Modbus, DNP3, MQTT/Sparkplug B) and their simulators.

Each protocol is a folder: config model, driver, simulator, README and golden cases. Connectors
register themselves with the engine's registry when their `connector` module is imported;
`register_all()` (the app calls it at start-up) names each protocol's connector types to the registry
(engine/connectors/registry.py `provide`), which imports a protocol's module when one of its types
is first asked for, so start-up (`aggregator serve` up to `/health`) and a run of other connectors
do not import them. The connector modules import their protocol libraries (asyncua, pymodbus...)
lazily too.
"""

from __future__ import annotations

import importlib
import importlib.util

PROTOCOLS = ("opcua", "modbus", "dnp3", "mqtt")


# The connector types of each protocol (its `connector` module registers them).
TYPES = {"opcua": ("opc_ua",), "modbus": ("modbus",), "dnp3": ("dnp3",), "mqtt": ("mqtt", "sparkplug_b")}


def register_all() -> list[str]:
    """Name every protocol's connector types to the engine's registry: a protocol's module is
    imported when one of its types is first asked for (`registry.get`), or when every type is
    (`registry.names`). Returns the protocols found."""
    from engine.connectors import registry

    found = [name for name in PROTOCOLS if _has_connector(name)]
    registry.provide({t: f"protocols.{name}.connector" for name in found for t in TYPES[name]})
    return found


def _has_connector(name: str) -> bool:
    return bool(
        importlib.util.find_spec(f"protocols.{name}")
        and importlib.util.find_spec(f"protocols.{name}.connector")
    )
