"""Connectors register by type name and are imported on first use (issue 10 performance:
`aggregator serve` answers /health without importing them; a run imports only the connectors its
spec names)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys, threading
import protocols
found = protocols.register_all()
protocols.register_all()  # again: harmless
from engine.connectors import registry
def connector_modules():
    return sorted(m for m in sys.modules if m.endswith(".connector") and m.startswith("protocols.")
                  or m in registry.BUILTIN.values())
before = connector_modules()
polars_after_naming = "polars" in sys.modules  # naming the types imports nothing heavy
results = []
threads = [threading.Thread(target=lambda: results.append(registry.get("modbus") is not None)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
after_modbus = connector_modules()
file_too = registry.get("File") is not None and registry.get("csv-nope") is None
after_unknown = connector_modules()
names = registry.names("source")
print(json.dumps({"found": found, "before": before, "after_modbus": after_modbus, "results": results,
                  "file_too": file_too, "after_unknown": after_unknown, "names": names,
                  "polars_after_naming": polars_after_naming,
                  "drivers": sorted(m for m in ("psycopg", "pika", "nats", "redis", "asyncua") if m in sys.modules)}))
"""

RUN_PROBE = """
import json, sys
import protocols
protocols.register_all()
from engine.connectors import registry
assert registry.get("file") is not None and registry.get("duckdb") is not None
print(json.dumps(sorted(m for m in ("psycopg", "pika", "nats", "redis", "httpx", "asyncua", "pymodbus",
                                    "engine.connectors.postgresql", "engine.connectors.rest_api",
                                    "protocols.opcua.connector") if m in sys.modules)))
"""


def probe(code: str):
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_connectors_are_imported_by_type_name_when_first_asked():
    found = probe(PROBE)
    assert found["found"] == ["opcua", "modbus", "dnp3", "mqtt"]
    assert found["before"] == []  # naming the protocols imported no connector module
    assert found["polars_after_naming"] is False  # nor Polars (a CLI client next to a service)
    assert found["after_modbus"] == ["protocols.modbus.connector"]  # only the one asked for
    assert found["results"] == [True] * 4  # four threads asking at once all see the type
    # an unknown name loads every connector (a plugin or a package may register it), then says no
    assert found["file_too"] is True
    assert "engine.connectors.postgresql" in found["after_unknown"]
    assert {"opc_ua", "modbus", "dnp3", "mqtt", "sparkplug_b", "file", "postgresql"} <= set(found["names"])


def test_a_file_to_duckdb_run_imports_no_other_connector_or_driver():
    assert probe(RUN_PROBE) == []
