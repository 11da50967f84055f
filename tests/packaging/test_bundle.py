"""Smoke test of the real PyInstaller bundle, in a bare environment (`env -i PATH=/usr/bin:/bin`, no
venv, run from an empty folder, so nothing comes from the source tree): --version, --help, demo,
validate, serve with /health, gui offscreen for 10 s and gui with no display; and the .deb built from
it: lintian without errors, and the program run from the unpacked package.

Slow (building takes minutes): runs when dist/aggregator exists (or $AGGREGATOR_BUNDLE names one),
or with BUILD_BUNDLE=1, which builds it first (packaging/build.sh --deb). CI decides with
packaging/ci_should_build.sh."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.net import free_port
from tests.waiting import wait_for

BUNDLE = Path(os.environ.get("AGGREGATOR_BUNDLE", REPO / "dist" / "aggregator"))
BUILD = os.environ.get("BUILD_BUNDLE") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BUILD and not (BUNDLE / "aggregator").exists(),
        reason=f"no bundle at {BUNDLE} (packaging/build.sh makes it; BUILD_BUNDLE=1 builds it here)",
    ),
]


@pytest.fixture(scope="module")
def program() -> Path:
    if BUILD:
        subprocess.run([REPO / "packaging" / "build.sh", "--deb"], cwd=REPO, check=True, timeout=3600)
    return BUNDLE / "aggregator"


@pytest.fixture
def bare(tmp_path):
    """Run the bundle as an operator would: nothing of ours in the environment, an empty folder."""
    home = tmp_path / "home"
    home.mkdir()

    def env(**extra: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": str(home), **extra}

    return tmp_path, env


def run(program: Path, *args: str, cwd: Path, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_version_names_the_commit(program, bare):
    cwd, env = bare
    done = run(program, "--version", cwd=cwd, env=env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("aggregator ") and "(commit " in done.stdout
    assert "(commit unknown)" not in done.stdout


def test_help_lists_every_command(program, bare):
    cwd, env = bare
    done = run(program, "--help", cwd=cwd, env=env())
    assert done.returncode == 0, done.stderr
    for command in ("gui", "serve", "run", "demo", "simulate", "validate", "service"):
        assert command in done.stdout


def test_demo_then_validate(program, bare):
    cwd, env = bare
    done = run(program, "demo", "--json", cwd=cwd, env=env())
    assert done.returncode == 0, done.stderr
    spec = (
        Path(env()["HOME"])
        / ".local"
        / "share"
        / "data-aggregator"
        / "demo"
        / "ecommerce"
        / "ecommerce_orders.json"
    )
    assert spec.exists(), done.stdout
    checked = run(program, "validate", str(spec), cwd=cwd, env=env())
    assert checked.returncode == 0, checked.stderr


def test_serve_answers_health_and_stops_on_sigterm(program, bare):
    cwd, env = bare
    port = free_port()
    server = subprocess.Popen(
        [str(program), "serve", "--data-dir", str(cwd / "svc"), "--listen", f"127.0.0.1:{port}"],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def health():
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    return json.load(answer)
            except OSError:
                return None

        assert wait_for(health, timeout=90, interval=0.2, what="the bundle's /health")["status"] == "ok"
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
    assert code == 0


def test_gui_runs_offscreen_for_10_seconds(program, bare):
    cwd, env = bare
    gui = subprocess.Popen(
        [str(program), "gui", "--data-dir", str(cwd / "gui")],
        cwd=cwd,
        env=env(QT_QPA_PLATFORM="offscreen", LANG="C.UTF-8"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(10)  # what is asserted is "still running after 10 s", not a condition to wait for
        alive = gui.poll() is None
    finally:
        gui.terminate()
        out = gui.communicate(timeout=60)[0]
    assert alive, out
    assert "Traceback" not in out and "unavailable" not in out, out


def test_gui_without_a_display_says_so(program, bare):
    cwd, env = bare
    done = run(program, "gui", cwd=cwd, env=env())
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().startswith("error: no display:"), done.stderr


def test_help_is_fast(program, bare):
    """The issue's target is 1.5 s cold; here (a shared, loaded machine) only a generous bound is
    asserted, and the figures are in docs/performance.md (tests/benchmarks/bench_bundle.py)."""
    cwd, env = bare
    started = time.perf_counter()
    run(program, "--help", cwd=cwd, env=env())
    assert time.perf_counter() - started < 10


def deb_file() -> Path | None:
    found = sorted((BUNDLE.parent).glob("data-aggregator_*.deb"))
    return found[-1] if found else None


@pytest.mark.timeout(900)  # lintian reads every file of the ~700 MB bundle: 142 s at load 6 here
def test_lintian_reports_no_errors():
    deb = deb_file()
    if deb is None or shutil.which("lintian") is None:
        pytest.skip("no .deb beside the bundle, or lintian is not installed")
    done = subprocess.run(
        ["lintian", "--tag-display-limit", "0", str(deb)], capture_output=True, text=True, timeout=900
    )
    errors = [line for line in done.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], done.stdout


def test_the_packaged_program_runs(tmp_path, bare):
    deb = deb_file()
    if deb is None:
        pytest.skip("no .deb beside the bundle (packaging/build.sh --deb)")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "root")], check=True, timeout=600)
    program = tmp_path / "root" / "opt" / "data-aggregator" / "aggregator"
    # As /usr/bin/aggregator runs it: through a symlink (the bootloader finds _internal by the real path).
    link = tmp_path / "bin" / "aggregator"
    link.parent.mkdir()
    link.symlink_to(program)
    cwd, env = bare
    done = run(link, "--version", cwd=cwd, env=env())
    assert done.returncode == 0 and "(commit " in done.stdout, done.stderr
