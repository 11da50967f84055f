"""The whole check, as CI and the README run it: ruff, import contracts, then pytest.

python -m tests [pytest args...]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def step(title: str, cmd: list[str]) -> None:
    print(f"\n=== {title}: {' '.join(cmd)}", flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code:
        print(f"=== {title} failed (exit {code})", flush=True)
        sys.exit(code)


def main() -> None:
    step("ruff lint", [str(BIN / "ruff"), "check", "."])
    step("ruff format", [str(BIN / "ruff"), "format", "--check", "."])
    step("import contracts", [str(BIN / "lint-imports"), "--no-cache"])
    # Peers whose pins clash with the project's venv, each in a directory of its own (tests/peers.py).
    step("test peers", [sys.executable, "-m", "tests.peers"])
    env_args = sys.argv[1:]
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # Serial by default: on this 2-core machine two pytest-xdist workers (TEST_WORKERS=2, a test file
    # per worker at a time) cut 13 -> 9.5 min with a core busy, but left GUI and streaming tests
    # starved of CPU (3 of 2,120 failed once); serial is ~9 min on an idle machine.
    workers = os.environ.get("TEST_WORKERS", "1")
    parallel = [] if workers in ("0", "1") else ["-n", workers, "--dist", "loadfile"]
    step("pytest", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *parallel, *env_args])


if __name__ == "__main__":
    main()
