"""packaging/ci_should_build.sh, in throwaway git repositories: CI runs on a clean checkout (no
dist/), so the commits under test decide (packaging/ or pyproject.toml changed since
${CI_BASE:-HEAD~1}); a cached dist/ decides by the hash of the inputs it was built from; NIGHTLY=1
always builds. Exit 0 = build, 1 = skip, 2 = cannot decide."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "x") -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", *files)
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "--short", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A checkout whose first commit has packaging/, pyproject.toml and a README, as CI clones it."""
    (tmp_path / "packaging").mkdir()
    shutil.copy(REPO / "packaging" / "ci_should_build.sh", tmp_path / "packaging")
    git(tmp_path, "init", "-q")
    commit(
        tmp_path,
        {
            "packaging/ci_should_build.sh": (tmp_path / "packaging" / "ci_should_build.sh").read_text(),
            "packaging/aggregator.spec": "# spec\n",
            "pyproject.toml": 'dependencies = ["polars"]\n',
            "README.md": "readme\n",
            ".gitignore": "dist/\n",
        },
    )
    return tmp_path


def should_build(repo: Path, *args: str, **env: str) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CI_BASE", "NIGHTLY")}
    done = subprocess.run(
        ["sh", repo / "packaging" / "ci_should_build.sh", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **env},
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def built(repo: Path) -> None:
    """What packaging/build.sh leaves (and a CI cache keeps): the bundle and its inputs' hash."""
    bundle = repo / "dist" / "aggregator"
    bundle.mkdir(parents=True)
    (bundle / "aggregator").write_text("#!/bin/sh\n")
    (bundle / "aggregator").chmod(0o755)
    assert should_build(repo, "--record")[0] == 0


# A clean checkout (no dist/): the commits under test decide.


def test_first_commit_cannot_compare_so_builds(repo):
    code, says = should_build(repo)
    assert code == 0
    assert says == "build: cannot compare with HEAD~1 (not a commit here: a shallow or first checkout?)"


def test_a_commit_changing_packaging_builds(repo):
    base = git(repo, "rev-parse", "--short", "HEAD")
    commit(repo, {"packaging/aggregator.spec": "# spec, changed\n"})
    assert should_build(repo) == (
        0,
        f"build: 1 file(s) of packaging/ or pyproject.toml changed since {base}: packaging/aggregator.spec",
    )


def test_a_commit_changing_the_dependencies_builds(repo):
    commit(repo, {"pyproject.toml": 'dependencies = ["polars", "duckdb"]\n'})
    code, says = should_build(repo)
    assert code == 0 and says.endswith(": pyproject.toml")


def test_a_commit_changing_other_files_skips(repo):
    base = commit(repo, {"packaging/aggregator.spec": "# spec, changed\n"})
    commit(repo, {"README.md": "docs\n", "engine/x.py": "x = 1\n"})
    assert should_build(repo) == (
        1,
        f"skip: packaging/ and pyproject.toml unchanged since {base} (no cached bundle)",
    )


def test_ci_base_covers_every_commit_under_test(repo):
    """Several commits tested at once: the packaging change two commits back still counts when
    CI_BASE names the previously tested commit; HEAD~1 alone would miss it."""
    tested = git(repo, "rev-parse", "HEAD")
    commit(repo, {"packaging/new_hook.py": "x = 1\n"})
    commit(repo, {"README.md": "docs\n"})
    assert should_build(repo)[0] == 1
    code, says = should_build(repo, CI_BASE=tested)
    assert code == 0 and says.endswith(": packaging/new_hook.py")


def test_an_unknown_ci_base_builds(repo):
    code, says = should_build(repo, CI_BASE="0123456789abcdef0123456789abcdef01234567")
    assert code == 0 and says.startswith("build: cannot compare with 0123456789abcdef")


def test_uncommitted_packaging_changes_count(repo):
    commit(repo, {"README.md": "docs\n"})
    (repo / "packaging" / "hook.py").write_text("x = 1\n")  # new, not committed
    code, says = should_build(repo)
    assert code == 0 and says.endswith(": packaging/hook.py")


def test_not_a_checkout_cannot_decide(tmp_path):
    (tmp_path / "packaging").mkdir()
    shutil.copy(REPO / "packaging" / "ci_should_build.sh", tmp_path / "packaging")
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}  # not the repository around /tmp, if any
    code, says = should_build(tmp_path, **env)
    assert code == 2 and "not a git checkout" in says


# A dist/ kept by a CI cache: the hash of its inputs decides, whatever the last commit touched.


def test_cached_bundle_unchanged_skips_even_after_a_packaging_commit(repo):
    commit(repo, {"packaging/aggregator.spec": "# spec, changed\n"})
    built(repo)
    assert should_build(repo) == (
        1,
        "skip: the cached bundle is current (packaging/ and pyproject.toml unchanged)",
    )


def test_cached_bundle_rebuilds_when_the_inputs_change(repo):
    built(repo)
    (repo / "pyproject.toml").write_text('dependencies = ["polars", "duckdb"]\n')
    assert should_build(repo) == (
        0,
        "build: packaging/ or pyproject.toml changed since the cached bundle was built",
    )
    should_build(repo, "--record")
    assert should_build(repo)[0] == 1
    (repo / "packaging" / "new_hook.py").write_text("x = 1\n")  # a new, not yet committed file counts
    assert should_build(repo)[0] == 0


def test_cached_bundle_ignores_other_changes(repo):
    built(repo)
    commit(repo, {"packaging/aggregator.spec": "# spec\n", "README.md": "docs\n"})
    (repo / "engine.py").write_text("x = 1\n")
    assert should_build(repo)[0] == 1


def test_a_bundle_without_its_stamp_builds(repo):
    built(repo)
    (repo / "dist" / ".bundle-inputs.sha256").unlink()
    code, says = should_build(repo)
    assert code == 0 and says.startswith("build: dist/aggregator has no record of its inputs")


def test_nightly_always_builds(repo):
    built(repo)
    assert should_build(repo, NIGHTLY="1") == (0, "build: nightly run")
    assert should_build(repo, NIGHTLY="0")[0] == 1
