"""`aggregator service install [--user] [--data-dir D] | uninstall | status | unit`: the systemd unit
that runs `aggregator serve` for this install (a bundle, a pip install or a source checkout).

The unit comes from ONE template, resources/systemd/aggregator.service.in, which the Debian package's
unit is rendered from too (packaging/build_deb.sh runs `python -m app.service_cmd deb-unit`). Its
ExecStart is the executable running now: the bundle's `aggregator`, the `aggregator` console script,
or this Python with `-m app.cli`.

systemctl is only called when systemd runs this machine and the unit goes to its usual place (not
with --root or --unit-dir, which tests and image builders use); otherwise the next commands are said.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_NAME = "aggregator.service"
TEMPLATE = Path(__file__).resolve().parent.parent / "resources" / "systemd" / "aggregator.service.in"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_DATA_DIR = Path("/var/lib/aggregator")  # StateDirectory=aggregator
SYSTEM_USER = "aggregator"
# The Debian package: the bundle under /opt, the service's data under /var/lib.
DEB_EXEC = "/opt/data-aggregator/aggregator"
HOME_PREFIXES = ("/home/", "/root/", "/run/user/")


# ---- rendering (the one rule for every unit) ---------------------------------------------------
# Characters a unit's ExecStart and paths may not carry as they are: systemd expands `%` (specifiers)
# and `$` (variables), and quotes, backslashes and control characters change the words.
UNSAFE = set("%$\"'\\`") | {chr(c) for c in range(32)} | {chr(127)}


def _quote(word: str) -> str:
    """One word of a unit file, in double quotes when it has a space."""
    bad = sorted({c for c in word if c in UNSAFE})
    if bad:
        from engine.errors import UsageError

        raise UsageError(
            f"{word!r}: a service path may not contain {' '.join(repr(c) for c in bad)} "
            "(allowed: letters, digits, spaces and ./_-+@:,~=)"
        )
    return f'"{word}"' if " " in word else word


def render_unit(
    mode: str, exec_start: list[str], data_dir: Path | str, environment: dict[str, str] | None = None
) -> str:
    """The unit text for `mode` "system" or "user"."""
    if mode not in ("system", "user"):
        raise ValueError(f"mode {mode!r}: allowed are 'system' and 'user'")
    data = str(data_dir)
    under_home = any(p.startswith(HOME_PREFIXES) for p in [data, *exec_start])
    values = {
        "@EXEC_START@": " ".join(_quote(w) for w in exec_start),
        "@DATA_DIR@": _quote(data),
        # A program or data under a home directory must stay reachable (data: ReadWritePaths).
        "@PROTECT_HOME@": "read-only" if under_home else "yes",
    }
    env_lines = [f"Environment={_quote(f'{k}={v}')}" for k, v in sorted((environment or {}).items())]
    keep, drop = f"@{mode}@", "@user@" if mode == "system" else "@system@"
    out: list[str] = []
    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        if line.startswith("##") or line.startswith(drop):
            continue
        line = line.removeprefix(keep)
        if line == "@ENVIRONMENT@":
            out.extend(env_lines)
            continue
        for key, value in values.items():
            line = line.replace(key, value)
        out.append(line)
    return "\n".join(out) + "\n"


def current_exec() -> tuple[list[str], dict[str, str]]:
    """The command that runs this install's CLI, and the environment it needs."""
    if getattr(sys, "frozen", False):  # the PyInstaller bundle
        return [str(Path(sys.executable).resolve())], {}
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "aggregator" and script.is_file():
        return [str(script.resolve())], {}  # the console script (pip install, or the venv's)
    env: dict[str, str] = {}
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        distribution("data-aggregator")
    except PackageNotFoundError:  # a checkout that was never installed: it is found by path
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return [str(Path(sys.executable).absolute()), "-m", "app.cli"], env


# ---- where the unit goes ----------------------------------------------------------------------
def unit_dir(user: bool, root: Path | None = None, override: Path | None = None) -> Path:
    if override is not None:
        base = override
    elif user:
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        base = Path(config) / "systemd" / "user"
    else:
        base = SYSTEM_UNIT_DIR
    if root is not None:
        return root / base.relative_to(base.anchor)
    return base


def default_data_dir(user: bool) -> Path:
    if not user:
        return SYSTEM_DATA_DIR
    from engine.datadir import default_data_dir as user_default

    return user_default()


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _systemctl(user: bool, *words: str) -> subprocess.CompletedProcess:
    command = ["systemctl", *(["--user"] if user else []), *words]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_text(text, encoding="utf-8")
    part.chmod(0o644)
    os.replace(part, path)


def _ensure_system_user() -> str:
    """The service's own user, created as a system user when missing (as the .deb's postinst does)."""
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
        return f"user {SYSTEM_USER} exists"
    except KeyError:
        pass
    if shutil.which("adduser"):
        command = ["adduser", "--system", "--group", "--home", str(SYSTEM_DATA_DIR), "--no-create-home"]
        command += ["--gecos", "Data Aggregator service", SYSTEM_USER]
    else:
        command = ["useradd", "--system", "--user-group", "--home-dir", str(SYSTEM_DATA_DIR)]
        command += ["--shell", "/usr/sbin/nologin", SYSTEM_USER]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        from engine.errors import AggregatorError

        raise AggregatorError(f"{' '.join(command)}: {(done.stderr or done.stdout).strip()}")
    return f"system user {SYSTEM_USER} created"


# ---- the commands -----------------------------------------------------------------------------
def add_service_parser(sub) -> None:
    sp = sub.add_parser("service", help="install, remove or check the systemd service (aggregator serve)")
    actions = sp.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    for name, text in (
        ("install", "write the unit for this install and start it (system: needs root)"),
        ("uninstall", "stop the service and remove its unit (the data directory is kept)"),
        ("status", "where the unit is, whether systemd runs it, and the service on its data dir"),
        ("unit", "print the unit that install would write"),
    ):
        ap = actions.add_parser(name, help=text)
        ap.add_argument("--user", action="store_true", help="a user service (systemctl --user), no root")
        ap.add_argument(
            "--root", type=Path, help="write under this folder instead of / (image builders, tests)"
        )
        ap.add_argument(
            "--unit-dir", type=Path, help="the folder for aggregator.service (default: systemd's)"
        )
        if name in ("install", "unit"):
            ap.add_argument(
                "--data-dir",
                type=Path,
                help="the service's data directory (default: /var/lib/aggregator; --user: the user data dir)",
            )
        if name == "install":
            ap.add_argument(
                "--no-start", action="store_true", help="write the unit, do not enable or start it"
            )


def cmd_service(args: argparse.Namespace) -> int:
    return {"install": install, "uninstall": uninstall, "status": status, "unit": print_unit}[
        args.service_command
    ](args)


def _unit_for(args: argparse.Namespace) -> str:
    data_dir = args.data_dir.expanduser().absolute() if args.data_dir else default_data_dir(args.user)
    command, env = current_exec()
    return render_unit("user" if args.user else "system", command, data_dir, env)


def _manages_systemd(args: argparse.Namespace) -> bool:
    return args.root is None and args.unit_dir is None and systemd_running()


def print_unit(args: argparse.Namespace) -> int:
    print(_unit_for(args), end="")
    return 0


def install(args: argparse.Namespace) -> int:
    from engine.errors import UsageError

    writes_system = not args.user and args.root is None and args.unit_dir is None
    if writes_system and os.geteuid() != 0:
        raise UsageError(
            "service install: the system service needs root (sudo aggregator service install), "
            "or use --user for a service of your own"
        )
    path = unit_dir(args.user, args.root, args.unit_dir) / UNIT_NAME
    _write_atomic(path, _unit_for(args))
    print(f"wrote {path}")
    if writes_system:
        print(_ensure_system_user())
    scope = "--user " if args.user else ""
    if _manages_systemd(args) and not args.no_start:
        for words in (("daemon-reload",), ("enable", "--now", UNIT_NAME)):
            done = _systemctl(args.user, *words)
            if done.returncode != 0:
                print(
                    f"error: systemctl {scope}{' '.join(words)}: {(done.stderr or done.stdout).strip()}",
                    file=sys.stderr,
                )
                return 1
        print(f"started: systemctl {scope}status aggregator")
    else:
        print(f"to start it: systemctl {scope}daemon-reload && systemctl {scope}enable --now aggregator")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    path = unit_dir(args.user, args.root, args.unit_dir) / UNIT_NAME
    if _manages_systemd(args):
        _systemctl(args.user, "disable", "--now", UNIT_NAME)  # not enabled or not running: nothing to do
    if not path.exists():
        print(f"no unit at {path}: nothing to remove")
        return 0
    path.unlink()
    if _manages_systemd(args):
        _systemctl(args.user, "daemon-reload")
    print(f"removed {path} (the data directory is kept)")
    return 0


def unit_data_dir(text: str) -> Path | None:
    """The --data-dir of a unit's ExecStart line."""
    import shlex

    for line in text.splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line.removeprefix("ExecStart="))
            if "--data-dir" in words[:-1]:
                return Path(words[words.index("--data-dir") + 1])
    return None


def status(args: argparse.Namespace) -> int:
    """0 when the unit is installed (and active, where systemd can be asked), else 3 (as systemctl)."""
    from engine.service.lock import owner

    path = unit_dir(args.user, args.root, args.unit_dir) / UNIT_NAME
    if not path.exists():
        print(f"unit: not installed (no {path})")
        return 3
    text = path.read_text(encoding="utf-8")
    exec_line = next((line for line in text.splitlines() if line.startswith("ExecStart=")), "ExecStart=?")
    print(f"unit: {path}")
    print(f"runs: {exec_line.removeprefix('ExecStart=')}")
    active = None
    if _manages_systemd(args):
        active = _systemctl(args.user, "is-active", UNIT_NAME).stdout.strip() or "unknown"
        print(f"systemd: {active}")
    else:
        print("systemd: not asked (not running here, or --root/--unit-dir given)")
    data_dir = unit_data_dir(text)
    if data_dir is not None:
        found = owner(data_dir)
        serving = "no service" if found is None else f"pid {found[0]} at {found[1] or '(starting)'}"
        print(f"data: {data_dir} ({serving})")
    return 0 if active in (None, "active") else 3


def main(argv: list[str] | None = None) -> int:
    """`python -m app.service_cmd deb-unit`: the Debian package's unit, on stdout (build_deb.sh)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["deb-unit"]:
        print("usage: python -m app.service_cmd deb-unit", file=sys.stderr)
        return 2
    print(render_unit("system", [DEB_EXEC], SYSTEM_DATA_DIR), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
