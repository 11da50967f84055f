"""packaging/ci_should_build.sh: build the bundle when packaging/ or pyproject.toml changed since the
last build, when there is no bundle, or nightly; otherwise skip (exit 1)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "packaging").mkdir()
    shutil.copy(REPO / "packaging" / "ci_should_build.sh", tmp_path / "packaging")
    (tmp_path / "packaging" / "aggregator.spec").write_text("# spec\n")
    (tmp_path / "pyproject.toml").write_text('dependencies = ["polars"]\n')
    (tmp_path / ".gitignore").write_text("dist/\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return tmp_path


def should_build(repo: Path, *args: str, **env: str) -> tuple[int, str]:
    done = subprocess.run(
        ["sh", repo / "packaging" / "ci_should_build.sh", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NIGHTLY": "0", **env},
    )
    return done.returncode, done.stdout.strip()


def built(repo: Path) -> None:
    bundle = repo / "dist" / "aggregator"
    bundle.mkdir(parents=True)
    (bundle / "aggregator").write_text("#!/bin/sh\n")
    (bundle / "aggregator").chmod(0o755)
    assert should_build(repo, "--record")[0] == 0


def test_no_bundle_builds(repo):
    assert should_build(repo) == (0, "build: no bundle at dist/aggregator")


def test_unchanged_skips_and_a_change_builds(repo):
    built(repo)
    assert should_build(repo)[0] == 1
    (repo / "pyproject.toml").write_text('dependencies = ["polars", "duckdb"]\n')
    assert should_build(repo) == (0, "build: packaging/ or pyproject.toml changed since the last build")
    should_build(repo, "--record")
    (repo / "packaging" / "new_hook.py").write_text("x = 1\n")  # a new, not yet committed file counts
    assert should_build(repo)[0] == 0


def test_other_changes_do_not_build(repo):
    built(repo)
    (repo / "README.md").write_text("docs\n")
    assert should_build(repo)[0] == 1


def test_nightly_always_builds(repo):
    built(repo)
    assert should_build(repo, NIGHTLY="1") == (0, "build: nightly run")
