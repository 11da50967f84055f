"""`aggregator simulate opcua|modbus|dnp3`: one part of the simulated wind farm, until Ctrl-C."""

from __future__ import annotations

import importlib

# The ports a plant engineer expects each protocol on (as non-root users may not bind below 1024,
# Modbus uses 5020 rather than 502).
DEFAULT_PORTS = {"opcua": 4840, "modbus": 5020, "dnp3": 20000}
DEFAULT_TAGS = {"opcua": 40, "modbus": 16, "dnp3": 16}
HOST = "127.0.0.1"  # every simulator listens here


def run_simulator(protocol: str, *, port: int | None, tags: int | None, seconds: float | None) -> int:
    """Every simulator starts here: a port that is taken is one line (`error: port 5020 is in
    use ...`, exit 2), checked before the server starts and again if its start fails that way."""
    from protocols.serving import PortInUse, check_port_free, is_port_in_use

    port = port or DEFAULT_PORTS[protocol]
    check_port_free(port, HOST)
    module = importlib.import_module(f"protocols.{protocol}.simulator")
    try:
        module.run_cli(port=port, tags=tags or DEFAULT_TAGS[protocol], seconds=seconds)
    except KeyboardInterrupt:
        print(f"{protocol} simulator stopped")
    except (OSError, RuntimeError, SystemExit) as exc:
        if is_port_in_use(exc):  # taken between the check and the start
            raise PortInUse(port, HOST) from None
        raise
    return 0
