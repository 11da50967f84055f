"""The Debian package, built by packaging/build_deb.sh (dpkg-deb only) from a tiny stand-in bundle so
that this runs in the normal suite; tests/packaging/test_bundle.py checks the real one. The package is
unpacked into a throwaway root and its files, modes, maintainer scripts and unit are checked."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app import service_cmd
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed (Debian/Ubuntu only)"
)
VERSION = "9.8.7"


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("deb")
    bundle = work / "bundle"
    (bundle / "_internal").mkdir(parents=True)
    (bundle / "aggregator").write_text('#!/bin/sh\necho "aggregator stand-in $*"\n')
    (bundle / "aggregator").chmod(0o755)
    (bundle / "_internal" / "libexample.so").write_bytes(b"\x7fELF stand-in")
    (bundle / "_internal" / "libexample.so").chmod(0o755)  # as wheels ship them; the package makes it 644
    env = {**os.environ, "PYTHON": sys.executable, "DEB_COMPRESS": "gzip"}
    subprocess.run(
        [
            REPO / "packaging" / "build_deb.sh",
            "--bundle",
            bundle,
            "--version",
            VERSION,
            "--out",
            work / "out",
        ],
        check=True,
        env=env,
        timeout=120,
    )
    (found,) = (work / "out").glob("data-aggregator_*.deb")
    return found


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", deb, target], check=True, timeout=60)
    subprocess.run(["dpkg-deb", "-e", deb, target / "DEBIAN"], check=True, timeout=60)
    return target


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", deb, name], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def test_control(deb):
    assert deb.name == f"data-aggregator_{VERSION}_{field(deb, 'Architecture')}.deb"
    assert field(deb, "Package") == "data-aggregator"
    assert field(deb, "Version") == VERSION
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    assert "adduser" in depends and any(d.startswith("libc6") for d in depends)
    assert int(field(deb, "Installed-Size")) > 0


def mode(path: Path) -> str:
    return stat.filemode(path.lstat().st_mode)


def test_files_and_modes(deb, root):
    opt = root / "opt" / "data-aggregator"
    assert mode(opt / "aggregator") == "-rwxr-xr-x"
    assert mode(opt / "_internal" / "libexample.so") == "-rw-r--r--"
    link = root / "usr" / "bin" / "aggregator"
    assert link.is_symlink() and os.readlink(link) == "/opt/data-aggregator/aggregator"
    share = root / "usr" / "share"
    for path in [
        root / "lib" / "systemd" / "system" / "aggregator.service",
        share / "applications" / "data-aggregator.desktop",
        share / "icons" / "hicolor" / "scalable" / "apps" / "data-aggregator.svg",
        share / "icons" / "hicolor" / "256x256" / "apps" / "data-aggregator.png",
        share / "doc" / "data-aggregator" / "copyright",
        share / "doc" / "data-aggregator" / "changelog.gz",
        share / "man" / "man1" / "aggregator.1.gz",
    ]:
        assert mode(path) == "-rw-r--r--", path
    for script in ("postinst", "prerm", "postrm"):
        assert mode(root / "DEBIAN" / script) == "-rwxr-xr-x"
    listing = subprocess.run(
        ["dpkg-deb", "-c", deb],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert all(" root/root " in line for line in listing.splitlines())  # owned by root in the package


def test_unit_is_the_template_and_verifies(root, tmp_path):
    unit = root / "lib" / "systemd" / "system" / "aggregator.service"
    text = unit.read_text()
    assert text == service_cmd.render_unit("system", [service_cmd.DEB_EXEC], service_cmd.SYSTEM_DATA_DIR)
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "User=aggregator",
        "StateDirectory=aggregator",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
    ):
        assert line in text.splitlines(), line
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    # Verified with ExecStart at the throwaway root's program (systemd checks that it exists).
    checked = tmp_path / "aggregator.service"
    checked.write_text(text.replace("/opt/data-aggregator", str(root / "opt" / "data-aggregator")))
    done = subprocess.run([tool, "verify", str(checked)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "aggregator.service" not in done.stderr, done.stderr


def test_desktop_entry(root):
    entry = (root / "usr" / "share" / "applications" / "data-aggregator.desktop").read_text().splitlines()
    assert (
        "Exec=aggregator gui %f" in entry and "Icon=data-aggregator" in entry and "Type=Application" in entry
    )
    tool = shutil.which("desktop-file-validate")
    if tool:
        done = subprocess.run(
            [tool, str(root / "usr/share/applications/data-aggregator.desktop")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def run_script(root: Path, tmp_path: Path, script: str, *args: str, user_exists: bool) -> list[str]:
    """Run a maintainer script with the system commands it calls replaced by recorders on PATH
    (getent answers whether the user exists); returns the commands it ran."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    for name in ("adduser", "install", "systemctl", "deluser", "deb-systemd-invoke", "deb-systemd-helper"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        (bin_dir / name).chmod(0o755)
    (bin_dir / "getent").write_text(f"#!/bin/sh\nexit {0 if user_exists else 2}\n")
    (bin_dir / "getent").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["sh", "-e", root / "DEBIAN" / script, *args], check=True, env=env, timeout=30)
    return log.read_text().splitlines() if log.exists() else []


def test_postinst_creates_the_system_user_and_data_dir(root, tmp_path):
    calls = run_script(root, tmp_path, "postinst", "configure", user_exists=False)
    assert calls[0] == (
        "adduser --system --group --home /var/lib/aggregator --no-create-home "
        "--gecos Data Aggregator service aggregator"
    )
    assert not any(c.startswith("systemctl enable") for c in calls)  # not started until enabled


def test_postinst_keeps_an_existing_user(root, tmp_path):
    calls = run_script(root, tmp_path, "postinst", "configure", user_exists=True)
    assert not any(c.startswith("adduser") for c in calls)


def test_postrm_purge_keeps_the_data(root, tmp_path):
    calls = run_script(root, tmp_path, "postrm", "purge", user_exists=True)
    assert not any(c.startswith("deluser") for c in calls)
