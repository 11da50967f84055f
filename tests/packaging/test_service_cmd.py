"""`aggregator service install | uninstall | status | unit`: the unit written is read back (systemd
may not run here) and checked with `systemd-analyze verify` where that tool exists."""

from __future__ import annotations

import shlex
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import service_cmd
from app.cli import main


def unit_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def directive(lines: list[str], name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{name}=")]


def verify(unit: Path) -> None:
    """`systemd-analyze verify`: the unit's syntax, directives and ExecStart's program."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed: the unit was only read back")
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert str(unit.name) not in done.stderr, done.stderr  # no warning about this unit either


def test_user_install_writes_the_unit_for_this_install(tmp_path, capsys):
    units, data = tmp_path / "units", tmp_path / "my data"
    code = main(["service", "install", "--user", "--unit-dir", str(units), "--data-dir", str(data)])
    assert code == 0
    unit = units / "aggregator.service"
    assert f"wrote {unit}" in capsys.readouterr().out
    lines = unit_lines(unit)
    command, env = service_cmd.current_exec()
    (exec_start,) = directive(lines, "ExecStart")
    assert shlex.split(exec_start) == [*command, "serve", "--data-dir", str(data)]
    assert directive(lines, "Type") == ["notify"]
    assert directive(lines, "Restart") == ["on-failure"]
    assert directive(lines, "WatchdogSec")
    assert directive(lines, "WantedBy") == ["default.target"]
    assert not directive(lines, "User")  # a user service runs as its user
    assert [f"{k}={v}" for k, v in env.items()] == directive(lines, "Environment")
    verify(unit)


def test_system_unit_under_a_root_has_the_hardening(tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["service", "install", "--root", str(root)]) == 0
    unit = root / "etc" / "systemd" / "system" / "aggregator.service"
    lines = unit_lines(unit)
    expected = {
        "Type": ["notify"],
        "User": ["aggregator"],
        "Group": ["aggregator"],
        "StateDirectory": ["aggregator"],
        "ProtectSystem": ["strict"],
        "PrivateTmp": ["yes"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "SystemCallFilter": ["@system-service"],
        "WantedBy": ["multi-user.target"],
    }
    for name, values in expected.items():
        assert directive(lines, name) == values, name
    assert directive(lines, "RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert shlex.split(directive(lines, "ExecStart")[0])[-2:] == ["--data-dir", "/var/lib/aggregator"]
    # The program of a checkout under /root or /home stays readable for the service:
    under_home = any(w.startswith(service_cmd.HOME_PREFIXES) for w in service_cmd.current_exec()[0])
    assert directive(lines, "ProtectHome") == ["read-only" if under_home else "yes"]
    verify(unit)


def test_status_and_uninstall(tmp_path, capsys):
    units = tmp_path / "units"
    args = ["--user", "--unit-dir", str(units)]
    assert main(["service", "status", *args]) == 3
    assert "unit: not installed" in capsys.readouterr().out
    main(["service", "install", *args, "--data-dir", str(tmp_path / "d")])
    capsys.readouterr()
    assert main(["service", "status", *args]) == 0
    out = capsys.readouterr().out
    assert f"unit: {units / 'aggregator.service'}" in out
    assert f"data: {tmp_path / 'd'} (no service)" in out
    assert main(["service", "uninstall", *args]) == 0
    assert not (units / "aggregator.service").exists()
    assert "the data directory is kept" in capsys.readouterr().out


def test_unit_prints_what_install_writes(tmp_path, capsys):
    args = ["--user", "--data-dir", str(tmp_path / "d")]
    main(["service", "unit", *args])
    printed = capsys.readouterr().out
    main(["service", "install", *args, "--unit-dir", str(tmp_path)])
    assert (tmp_path / "aggregator.service").read_text() == printed


def test_deb_unit_is_the_same_template(capsys):
    """build_deb.sh's unit: the system rendering with the .deb's program and data directory."""
    assert service_cmd.main(["deb-unit"]) == 0
    text = capsys.readouterr().out
    assert text == service_cmd.render_unit("system", [service_cmd.DEB_EXEC], service_cmd.SYSTEM_DATA_DIR)
    assert "ExecStart=/opt/data-aggregator/aggregator serve --data-dir /var/lib/aggregator" in text
    assert "@" not in text.replace("@system-service", "")  # every marker and placeholder was filled


def test_a_path_systemd_would_rewrite_is_refused(tmp_path, capsys):
    code = main(["service", "unit", "--user", "--data-dir", str(tmp_path / "50%")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "may not contain '%'" in err and len(err.splitlines()) == 1


def test_system_install_without_root_says_so(capsys, monkeypatch):
    monkeypatch.setattr(service_cmd.os, "geteuid", lambda: 1000)
    assert main(["service", "install"]) == 2
    assert "needs root" in capsys.readouterr().err


SAFE = string.ascii_letters + string.digits + " ./_-+@:,~="


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(SAFE, min_size=1, max_size=12).filter(lambda p: p.strip(".") != ""), min_size=1, max_size=4
    )
)
def test_data_dir_round_trips_through_the_unit(parts):
    data_dir = Path("/", *parts)
    text = service_cmd.render_unit("system", [sys.executable], data_dir)
    assert service_cmd.unit_data_dir(text) == data_dir
