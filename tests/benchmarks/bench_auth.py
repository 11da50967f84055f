"""What users, roles and the audit trail cost (issue 14), against the plain way in the same run:

- argon2id: a hash at our setting (OWASP: 19 MiB, 2 passes, 1 lane) against argon2-cffi's default
  (RFC 9106 low-memory: 64 MiB, 3 passes, 4 lanes), the peer; a login verifies one hash.
- the front door's check: a read through `LocalEngine.as_principal(p)` against the same call on
  the bare engine (`health.active_streams`, which does almost nothing, so the check shows).
- the audit trail: entries appended per second (each a hash-chained insert in one transaction) and
  entries verified per second by `verify()`.

    python tests/benchmarks/bench_auth.py [--hashes 7] [--calls 20000] [--entries 5000]

Prints one JSON document (medians; the machine and its load average with them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def argon2_hash_s(hashes: int) -> dict[str, float]:
    from argon2 import PasswordHasher, Type

    from engine.auth.users import ARGON2

    out = {}
    for name, hasher in (
        ("ours", PasswordHasher(**ARGON2, type=Type.ID)),
        ("argon2_cffi_default", PasswordHasher()),
    ):
        times = []
        for _ in range(hashes):
            started = time.perf_counter()
            hasher.hash("correct horse battery")
            times.append(time.perf_counter() - started)
        out[name] = round(statistics.median(times), 4)
    return out


def guard_overhead_us(calls: int, folder: Path) -> dict[str, float]:
    from engine.api import LocalEngine
    from engine.auth import Principal

    engine = LocalEngine(folder / "data")
    try:
        view = engine.as_principal(Principal("ana", "viewer", "api", "127.0.0.1"))
        out = {}
        for name, target in (("bare", engine), ("checked", view)):
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(calls):
                    target.health.active_streams()
                runs.append((time.perf_counter() - started) / calls * 1e6)
            out[name] = round(statistics.median(runs), 2)
        out["overhead"] = round(out["checked"] - out["bare"], 2)
        return out
    finally:
        engine.close()


def audit_rates(entries: int, folder: Path) -> dict[str, float]:
    from engine.auth.audit import AuditLog

    log = AuditLog(folder / "audit.db")
    started = time.perf_counter()
    for i in range(entries):
        log.record("pipelines.save", user="ana", role="editor", source="api", client="10.0.0.1",
                   target=f"p{i}.json", detail={"diff": [{"path": "$.name", "old": "a", "new": "b"}]})  # fmt: skip
    appended = entries / (time.perf_counter() - started)
    started = time.perf_counter()
    result = log.verify()
    verified = entries / (time.perf_counter() - started)
    log.close()
    assert result["ok"], result
    return {"appended_per_s": round(appended), "verified_per_s": round(verified)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--entries", type=int, default=5_000)
    args = parser.parse_args()
    os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["AGGREGATOR_CONFIG"] = str(folder / "config")
        load_before = os.getloadavg()[0]
        report = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_1m_before": round(load_before, 2),
            },
            "argon2id_hash_s": argon2_hash_s(args.hashes),
            "front_door_call_us": guard_overhead_us(args.calls, folder),
            "audit": audit_rates(args.entries, folder),
        }
        report["machine"]["load_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
