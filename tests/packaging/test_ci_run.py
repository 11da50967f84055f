""".ci/run builds the bundle before the test command when packaging/ci_should_build.sh says so, and a
failed build stops CI with one clear line (run for real in a throwaway checkout whose build fails)."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from tests.conftest import REPO

CI_RUN = REPO / ".ci" / "run"
SERVICE_PORTS = (5432, 3306, 1883, 6379, 5672, 4222)  # .ci/run starts any that is down


def test_the_build_decision_comes_before_the_test_command():
    lines = CI_RUN.read_text().splitlines()
    decide = next(i for i, line in enumerate(lines) if "packaging/ci_should_build.sh" in line)
    build = next(i for i, line in enumerate(lines) if "packaging/build.sh --deb ||" in line)
    test = next(i for i, line in enumerate(lines) if ".venv/bin/python -m tests" in line)
    assert decide < build < test == len(lines) - 1
    assert (
        lines[test]
        == "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/python -m tests"
    )


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_failed_build_fails_ci_with_one_line(tmp_path):
    down = [p for p in SERVICE_PORTS if not _port_open(p)]
    if down:
        pytest.skip(f".ci/run would start the services on ports {down} first")
    (tmp_path / ".ci").mkdir()
    (tmp_path / "packaging").mkdir()
    shutil.copy(CI_RUN, tmp_path / ".ci" / "run")
    shutil.copy(REPO / "packaging" / "ci_should_build.sh", tmp_path / "packaging")
    build = tmp_path / "packaging" / "build.sh"
    build.write_text("#!/bin/sh\necho 'pyinstaller: ERROR: something broke' >&2\nexit 3\n")
    build.chmod(0o755)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    done = subprocess.run(
        ["bash", ".ci/run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NIGHTLY": "1", "HOME": str(tmp_path)},
    )
    assert done.returncode == 1
    assert done.stdout.strip() == "build: nightly run"
    assert done.stderr.strip().splitlines() == [
        "pyinstaller: ERROR: something broke",
        "CI FAILED: packaging/build.sh --deb did not build the bundle and the .deb (log above)",
    ]
    assert not (tmp_path / ".venv").exists()  # the test command did not run
