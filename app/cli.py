"""`aggregator` command line (spec section 7). Errors are one line; tracebacks only with --debug."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


# Commands whose parser is made here, alone: `aggregator run x.json` builds only the parser of
# `run` (issue 12: the whole parser, with the other command modules' imports, took ~18 ms of CPU,
# `run`'s alone ~3 ms). Any other line (`--help`, a mistyped command, a command of another module)
# gets the whole parser.
ALONE = ("run", "validate", "preview", "runs", "demo", "schema", "gui", "simulate", "secret", "token")


def _command_of(argv: list[str]) -> str | None:
    """The command a line names when its parser can be made alone (one of ALONE), else None."""
    for arg in argv:
        if arg == "--debug":
            continue
        if arg.startswith("-"):  # --help, --version, or an option before the command
            return None
        return arg if arg in ALONE else None
    return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with `only` (one of ALONE), the parser of that command alone
    (the same arguments, help and errors for that command)."""

    def want(name: str) -> bool:
        return only is None or only == name

    p = argparse.ArgumentParser(
        prog="aggregator", description="Data Aggregator: industrial edge data pipelines."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks (anywhere on the line)")
    p.add_argument("--version", action=_VersionAction, help="print the version and the build's git commit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--data-dir", type=Path, help="data directory (default: $AGGREGATOR_HOME, else the user data dir)"
        )

    if want("run"):
        sp = sub.add_parser("run", help="run a pipeline once, now (a real_time pipeline until Ctrl-C)")
        sp.add_argument("spec", type=Path)
        data_dir(sp)
        sp.add_argument("--json", action="store_true", help="print the run record as JSON")
        sp.add_argument(
            "--seconds", type=_positive_float, default=None, help="real_time pipelines: stop after this long"
        )

    if want("validate"):
        sp = sub.add_parser("validate", help="validate a pipeline and print every error with its path")
        sp.add_argument("spec", type=Path)
        sp.add_argument("--json", action="store_true")

    if want("preview"):
        sp = sub.add_parser("preview", help="dry run: the first rows at each node; writes nothing")
        sp.add_argument("spec", type=Path)
        sp.add_argument("--node", help="show only this node")
        sp.add_argument("--limit", type=int, default=10, help="rows per node (default 10)")
        data_dir(sp)
        sp.add_argument("--json", action="store_true")

    if want("runs"):
        sp = sub.add_parser("runs", help="run history")
        sp.add_argument("--pipeline")
        from engine.statuses import RUN_STATUSES

        sp.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
        sp.add_argument("--limit", type=int, default=50)
        data_dir(sp)
        sp.add_argument("--json", action="store_true")

    if want("demo"):
        sp = sub.add_parser(
            "demo", help="build the example data and pipelines, run them, say where the results are"
        )
        data_dir(sp)
        sp.add_argument("--json", action="store_true")
        sp.add_argument(
            "--wind-farm",
            action="store_true",
            help="the streaming demo: simulated turbines (OPC UA), meters (Modbus) and an RTU (DNP3) into the historian",
        )
        sp.add_argument(
            "--seconds", type=_positive_float, default=20.0, help="wind-farm demo: how long to run"
        )

    if want("schema"):
        sub.add_parser("schema", help="print the JSON Schema of the pipeline document")

    if want("gui"):
        sp = sub.add_parser("gui", help="the desktop app")
        sp.add_argument("spec", type=Path, nargs="?", help="a pipeline to open in the editor")
        data_dir(sp)
        sp.add_argument(
            "--attach",
            metavar="URL",
            help="drive the service at URL (`aggregator serve`); without it, a service owning the data dir is attached to",
        )
        sp.add_argument("--token", help="the service's API token for --attach (default: $AGGREGATOR_TOKEN)")
        sp.add_argument(
            "--cafile",
            type=Path,
            help="for --attach https://...: trust the service's certificate signed by this CA (or the"
            " self-signed certificate itself); default: tls_cafile of the settings",
        )

    if only is None:  # the commands of other modules
        from app.query import add_query_parser

        add_query_parser(sub)

        from app.logs_cmd import add_logs_parser

        add_logs_parser(sub, data_dir)

        from app.outbox_cmd import add_outbox_parser

        add_outbox_parser(sub, data_dir)
        from app.alerts_cmd import add_alerts_parser

        add_alerts_parser(sub, data_dir)
        from app.users_cmd import add_users_parser  # users, login (issue 14)

        add_users_parser(sub, data_dir)
        from app.audit_cmd import add_audit_parser

        add_audit_parser(sub, data_dir)

        from app.serve_args import add_parser as add_serve_parser

        add_serve_parser(sub)
        from app.settings import add_parser as add_settings_parser

        add_settings_parser(sub)
        from app.service_cmd import add_service_parser

        add_service_parser(sub)

    if want("simulate"):
        sp = sub.add_parser("simulate", help="run a protocol simulator (a wind-farm part) until Ctrl-C")
        sp.add_argument("protocol", choices=["opcua", "modbus", "dnp3"])
        sp.add_argument("--port", type=int, default=None, help="TCP port (default: the protocol's usual one)")
        sp.add_argument("--tags", type=_positive_int, default=None, help="about how many tags to serve")
        sp.add_argument("--seconds", type=_positive_float, default=None, help="stop after this long")

    if want("secret"):
        sp = sub.add_parser("secret", help='store a secret that pipelines name as {"secret": NAME}')
        secret_sub = sp.add_subparsers(dest="secret_command", required=True, metavar="ACTION")
        ss = secret_sub.add_parser("set", help="store NAME (value from standard input, or asked for)")
        ss.add_argument("name")
        ss.add_argument(
            "--file-store", action="store_true", help="use the encrypted file even if a keyring exists"
        )
        data_dir(ss)
        ss = secret_sub.add_parser("check", help="say whether NAME is set (never prints the value)")
        ss.add_argument("name")
        data_dir(ss)

    if want("token"):
        sp = sub.add_parser(
            "token", help="print the service's API token (created on first use, kept as a secret)"
        )
        data_dir(sp)

    return p


def _positive(kind: type, what: str):
    """An argparse type: a `kind` number above zero; otherwise a one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{value} is not positive")
        return value

    return parse


_positive_int = _positive(int, "a whole number")
_positive_float = _positive(float, "a number")


def _version() -> str:
    """`0.1.0 (commit 1a2b3c4d5e6f)`: a bundle's version and commit were baked in by
    packaging/build.sh (the generated module `aggregator_build`); a source install asks git, when it
    runs from a checkout, at the moment --version is asked for."""
    try:
        import aggregator_build  # type: ignore[import-not-found]  # only inside a bundle

        return f"{aggregator_build.VERSION} (commit {aggregator_build.COMMIT})"
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("data-aggregator")
    except PackageNotFoundError:  # run from a source tree that was never installed
        number = "unknown"
    return f"{number} (commit {_source_commit()})"


def _source_commit() -> str:
    """The checkout's commit, or "unknown" outside a git checkout (or without git)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit or "unknown"


class _VersionAction(argparse.Action):
    """--version, computed when asked for (not on every command: it may run git)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"aggregator {_version()}")
        parser.exit()


def _hoist_debug(argv: list[str]) -> list[str]:
    """`--debug` anywhere on the line (`aggregator run x.json --debug`) works as it does before the
    command: it is moved to the front. Arguments after `--` are left as they are."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:end]:
        return argv
    rest = [a for a in argv[:end] if a != "--debug"]
    return ["--debug", *rest, *argv[end:]]


# An environment problem (a read-only or full data directory, a port in use, a file held by another
# process) is not a bug: one line naming what and where, exit 1 (the work could not be done), never
# "internal error". A data directory locked by a running service is DataDirLocked (exit 2).
EXIT_ENVIRONMENT = EXIT_FAILED


def environment_problem(exc: BaseException) -> str | None:
    """The one line for an environment problem, or None when `exc` is not one."""
    if isinstance(exc, OSError):
        where = exc.filename
        what = exc.strerror or str(exc) or type(exc).__name__
        if where is not None and exc.filename2 is not None:
            return f"{where} -> {exc.filename2}: {what}"
        return f"{where}: {what}" if where is not None else what
    name = type(exc).__name__
    if name == "IOException" and "lock" in str(exc).lower():  # DuckDB: a file held by another process
        return str(exc).replace("IO Error: ", "").splitlines()[0]
    return None


def main(argv: list[str] | None = None) -> int:
    import os

    # No pydantic plugin is part of the product; looking for one reads every installed package's
    # entry points when the first model is built (~15 ms of each command that reads a pipeline).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    argv = _hoist_debug(list(sys.argv[1:] if argv is None else argv))
    args = _parser(_command_of(argv)).parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (`aggregator query ... | head`): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        from engine.errors import AggregatorError, SpecError
        from engine.secrets import mask  # secret values resolved by this process never reach stderr

        if args.debug:
            import traceback

            print(mask(traceback.format_exc()), end="", file=sys.stderr)
        if isinstance(exc, SpecError):
            _print_spec_error(exc)
            return EXIT_INVALID
        if isinstance(exc, AggregatorError):
            print(f"error: {mask(exc.one_line())}", file=sys.stderr)
            return exc.exit_code
        problem = environment_problem(exc)
        if problem is not None:
            print(mask(f"error: {problem}"), file=sys.stderr)
            return EXIT_ENVIRONMENT
        print(
            mask(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for details)"),
            file=sys.stderr,
        )
        return EXIT_FAILED


def _dispatch(args: argparse.Namespace) -> int:
    import protocols
    from app import commands

    if args.command != "run":  # a run says when its start-up is done (app/commands.py cmd_run)
        start_up_done()

    if getattr(args, "cafile", None):  # this command's clients trust it (engine/datadir.py client_tls)
        import os

        os.environ["AGGREGATOR_TLS_CAFILE"] = str(args.cafile.expanduser())

    protocols.register_all()

    if args.command == "serve":
        from app.serve import cmd_serve

        return cmd_serve(args)
    if args.command == "service":
        from app.service_cmd import cmd_service

        return cmd_service(args)
    if args.command == "settings":
        from app.settings import cmd_settings

        return cmd_settings(args)
    if args.command == "alerts":
        from app.alerts_cmd import cmd_alerts

        return cmd_alerts(args)
    if args.command == "outbox":
        from app.outbox_cmd import cmd_outbox

        return cmd_outbox(args)
    handler = getattr(commands, f"cmd_{args.command}")
    return handler(args)


def _print_spec_error(exc: Any) -> None:
    where = f"{exc.source}: " if exc.source else ""
    for issue in exc.issues:
        print(f"error: {where}{issue}", file=sys.stderr)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


_collector_paused = False  # entry(): the cyclic garbage collector waits for the start-up's end


def start_up_done() -> None:
    """The process has started (its modules imported, the spec read, the engine open): the cyclic
    garbage collector, paused by `entry`, runs again, and what the start-up made (modules, classes,
    functions, models: kept for the life of the process) is frozen out of its scans (`gc.freeze`).
    Collecting during the start-up found little to free and cost a 10-row run ~40 ms of CPU (one
    full collection over every object of Polars, pydantic and the engine, and ten of the middle
    generation), 12% of the run; with the parser of `run` alone, 16 - 23 ms (the full collection
    no longer came, until the next import that tips it). The hand-written Polars script makes
    fewer objects and never reaches a full collection. A long run (a stream, a large file) collects as usual, and its
    collections no longer scan the start-up's objects. The cost: the cyclic garbage the start-up
    left (~750 objects of a 10-row run's ~52,000) is frozen with the rest, never freed. Nothing
    when the collector was not paused (`main` called by a test or another program)."""
    global _collector_paused
    if _collector_paused:
        import gc

        _collector_paused = False
        gc.freeze()
        gc.enable()


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints the stack of every thread to stderr (the journal, for the service)
    and the process carries on: what a process that does not stop, or stops slowly, is waiting
    for. Written by the interpreter itself (faulthandler), so it comes even when every Python
    thread is blocked. Not on Windows (no SIGUSR1)."""
    import faulthandler
    import signal

    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is not None:
        faulthandler.register(usr1, all_threads=True, chain=False)


def entry() -> None:
    """The `aggregator` console script. Everything is closed and flushed when `main` returns, so
    the process ends at once instead of spending ~0.15 s tearing down Polars' and DuckDB's native
    thread pools and module state (measured on a 1 M-row run). The garbage collector waits for the
    start-up's end (`start_up_done`: `aggregator run` says when; any other command at once)."""
    import gc
    import os

    _stacks_on_sigusr1()
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
