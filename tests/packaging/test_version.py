"""`aggregator --version`: the version and the commit (git's, in a checkout; baked in, in a bundle)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from tests.conftest import REPO


def run_version(env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "--version"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_checkout_prints_the_git_commit():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert run_version() == f"aggregator {version('data-aggregator')} (commit {commit})"


def test_a_bundle_prints_what_the_build_baked_in(tmp_path):
    (tmp_path / "aggregator_build.py").write_text('VERSION = "3.2.1"\nCOMMIT = "0123456789ab"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    assert run_version(env) == "aggregator 3.2.1 (commit 0123456789ab)"
