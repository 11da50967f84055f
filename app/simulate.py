"""`aggregator simulate opcua|modbus|dnp3`: one part of the simulated wind farm, until Ctrl-C."""

from __future__ import annotations

import importlib

# The ports a plant engineer expects each protocol on (as non-root users may not bind below 1024,
# Modbus uses 5020 rather than 502).
DEFAULT_PORTS = {"opcua": 4840, "modbus": 5020, "dnp3": 20000}
DEFAULT_TAGS = {"opcua": 40, "modbus": 16, "dnp3": 16}


def run_simulator(protocol: str, *, port: int | None, tags: int | None, seconds: float | None) -> int:
    module = importlib.import_module(f"protocols.{protocol}.simulator")
    try:
        module.run_cli(
            port=port or DEFAULT_PORTS[protocol], tags=tags or DEFAULT_TAGS[protocol], seconds=seconds
        )
    except KeyboardInterrupt:
        print(f"{protocol} simulator stopped")
    return 0
