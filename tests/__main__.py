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
    # Two pytest-xdist workers by default (a test file per worker at a time): serially the suite
    # grew to 15 min with a core busy, two workers take 11. Every test waits on its own condition,
    # so a starved worker is slower, not red. TEST_WORKERS=1 runs serially (e.g. to debug).
    workers = os.environ.get("TEST_WORKERS", "2")
    parallel = [] if workers in ("0", "1") else ["-n", workers, "--dist", "loadfile"]
    step("pytest", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *parallel, *env_args])


if __name__ == "__main__":
    main()
