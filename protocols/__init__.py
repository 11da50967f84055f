"""Field-protocol connectors (OPC UA, Modbus, DNP3, MQTT/Sparkplug B) and their simulators.

Each protocol is a folder: config model, driver, simulator, README and golden cases. Connectors
register themselves with the engine's registry when their `connector` module is imported;
`register_all()` does that for every protocol (the app calls it at start-up). The connector
modules import their protocol libraries (asyncua, pymodbus...) lazily, so registering is cheap.
"""

from __future__ import annotations

import importlib
import importlib.util

PROTOCOLS = ("opcua", "modbus", "dnp3", "mqtt")


def register_all() -> list[str]:
    """Import every protocol's connector module; returns the protocols registered."""
    done = []
    for name in PROTOCOLS:
        module = f"protocols.{name}.connector"
        if importlib.util.find_spec(f"protocols.{name}") and importlib.util.find_spec(module):
            importlib.import_module(module)
            done.append(name)
    return done
