"""A Python script run as a process of its own, for tests that check what a process imports (a
source that must never load Polars, say): the parent's modules must not count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_line(script: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    """Run `script` with this interpreter from the repository root (in `env`, else this process's
    environment); it must exit 0 (else the test fails with its stderr). Returns the last line it
    printed."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.rstrip("\n").split("\n")[-1]
