"""Protocol connectors register by name and are imported on first use (issue 10 performance:
`aggregator serve` answers /health without importing them)."""

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
protocols.register_all()  # again: one loader, not two
before = sorted(m for m in sys.modules if m.startswith("protocols.") and m.endswith(".connector"))
from engine.connectors import registry
results = []
threads = [threading.Thread(target=lambda: results.append(registry.get("modbus") is not None)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
after = sorted(m for m in sys.modules if m.startswith("protocols.") and m.endswith(".connector"))
print(json.dumps({"found": found, "before": before, "after": after, "results": results,
                  "names": registry.names("source")}))
"""


def test_connectors_are_imported_when_the_registry_is_first_asked():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["found"] == ["opcua", "modbus", "dnp3", "mqtt"]
    assert probe["before"] == []  # registering imported no connector module
    assert probe["after"] == sorted(f"protocols.{p}.connector" for p in probe["found"])
    assert probe["results"] == [True] * 4  # four threads asking at once all see the types
    assert {"opc_ua", "modbus", "dnp3", "mqtt", "sparkplug_b"} <= set(probe["names"])
