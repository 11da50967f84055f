"""Start-up of the batch path (issue 12 item 3): what a file-only run imports, and the transform
registry's names against the modules that register them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.transforms import registry

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "duckdb", "pyarrow", "PySide6", "asyncua", "pymodbus")
# What a file-only batch run must not load either: sqlite-utils and numpy (the metadata store used
# sqlite-utils, which imported numpy), the streaming runner (the console lines of source sessions),
# the outbox (opened at the end of every one-shot run to look for alert notifications to wait for)
# and asyncio (the engine's loop, started with its first coroutine).
NOT_FOR_A_FILE_RUN = {
    "numpy",
    "sqlite_utils",
    "asyncio",
    "engine.streaming.run",
    "engine.streaming.runner",
    "engine.outbox.manager",
    # the alert conditions: parsed and checked only when a spec has `error_handling.alerts` (issue 12)
    "engine.alerts.conditions",
    # the parsers of the other commands, with their modules (app/cli.py ALONE), and the service's
    # log module, for the line of a retry that a run without one never prints (app/commands.py)
    "app.serve",
    "app.service_cmd",
    "app.settings",
    "app.query",
    "engine.service.logs",
    "logging.handlers",
}


def test_every_builtin_type_is_registered_by_the_module_named_for_it():
    types = registry.all_types()
    assert set(types) == set(registry.BUILTIN)
    for name, cls in types.items():
        assert cls.__module__ == "engine.transforms." + registry.BUILTIN[name], name
    assert {
        alias: registry.canonical(alias) for alias in registry.BUILTIN_ALIASES
    } == registry.BUILTIN_ALIASES


def _imported_by(args: list[str], tmp_path: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages and the engine's modules `python -m app.cli ARGS` imported, and its
    result."""
    probe = (
        "import sys, runpy, atexit, json;"
        f"atexit.register(lambda: open({str(tmp_path / 'mods.json')!r}, 'w').write("
        "json.dumps(sorted({m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if m.startswith(('engine.', 'app.', 'logging.'))}))));"
        "sys.argv = ['aggregator', *sys.argv[1:]];"
        "runpy.run_module('app.cli', run_name='__main__')"
    )
    env = {**os.environ, "AGGREGATOR_ALLOWED_ROOTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    return set(json.loads((tmp_path / "mods.json").read_text())), proc


def _tiny_spec(tmp_path: Path) -> Path:
    """A file-only pipeline, in.csv -> trim(email) -> out.csv, written to `tmp_path/p.json`."""
    spec = tmp_path / "p.json"
    spec.write_text(
        json.dumps(
            {
                "name": "tiny",
                "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv"}}],
                "transformations": [{"type": "field_mapping", "field_name": "email", "operation": "trim"}],
                "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
            }
        )
    )
    return spec


def test_a_csv_to_csv_run_imports_no_heavy_package(tmp_path):
    (tmp_path / "in.csv").write_text("id,email\n1,a@example.com\n2,bad\n")
    spec = _tiny_spec(tmp_path)
    modules, proc = _imported_by(["run", str(spec), "--data-dir", str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.csv").read_text().splitlines()[1:] == ["1,a@example.com", "2,bad"]
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not modules & NOT_FOR_A_FILE_RUN, sorted(modules & NOT_FOR_A_FILE_RUN)


# `--help` and `validate` budgets: what they must not import (each was imported once, ~0.15 s for
# pydantic by the settings model alone; `--help` is meant to take < 0.1 s as a whole process).
HELP_FORBIDDEN = {"polars", "numpy", "sqlite_utils", "pydantic", "pydantic_core", "tomllib", *HEAVY}


def test_help_imports_neither_polars_nor_pydantic_nor_the_stores(tmp_path):
    modules, proc = _imported_by(["--help"], tmp_path)
    assert "usage: aggregator" in proc.stdout
    assert not modules & HELP_FORBIDDEN, sorted(modules & HELP_FORBIDDEN)


def test_validate_opens_no_store_and_starts_no_engine(tmp_path):
    spec = _tiny_spec(tmp_path)
    modules, proc = _imported_by(["validate", str(spec)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    loaded = modules & (
        {"numpy", "sqlite_utils", "asyncio", *HEAVY}
        | {m for m in modules if m.startswith(("engine.store", "engine.streaming", "engine.workspace"))}
    )
    assert not loaded, sorted(loaded)


def test_the_parser_of_a_command_alone_is_the_whole_parsers_part(capsys):
    """`aggregator run ...` builds the parser of `run` alone (app/cli.py ALONE): the same help, the
    same arguments as in the whole parser; any other line gets the whole parser."""
    import pytest

    from app import cli

    def help_of(parser, command):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        return capsys.readouterr().out

    for command in cli.ALONE:
        assert help_of(cli._parser(command), command) == help_of(cli._parser(), command), command
    line = ["run", "p.json", "--data-dir", "d", "--json", "--seconds", "2"]
    assert vars(cli._parser("run").parse_args(line)) == vars(cli._parser().parse_args(line))
    assert cli._command_of(["--debug", "run", "p.json"]) == "run"
    assert cli._command_of(["--help"]) is None
    assert cli._command_of(["serve"]) is None  # another module's command: the whole parser
    assert cli._command_of(["rn"]) is None  # a mistyped command: the whole parser says what exists


def test_retry_events_are_those_the_service_log_makes_a_line_of():
    from app.commands import RETRY_EVENTS
    from engine.service.logs import retry_line

    base = {"attempt": 2, "retry": 1, "max_retries": 3, "delay_s": 1, "error": "x", "node": "n"}
    for kind in RETRY_EVENTS:
        assert retry_line({**base, "event": kind}), kind
    for kind in ("run_started", "run_finished", "node_progress", "source_state", "log"):
        assert retry_line({**base, "event": kind}) is None, kind


# The console script pauses the cyclic garbage collector for the start-up (app/cli.py entry): a
# run turns it on again, with the start-up's objects frozen, before its job starts; any other
# command before its work. The probe wraps the hand-over and prints what it saw.
ENTRY_PROBE = """
import gc, json, sys
import app.cli as cli, app.commands as commands
seen = []
def probe(real):
    def done():
        seen.append({"enabled_before": gc.isenabled()})
        real()
        seen[-1].update(enabled_after=gc.isenabled(), frozen=gc.get_freeze_count())
    return done
commands.start_up_done = probe(commands.start_up_done)
cli.start_up_done = probe(cli.start_up_done)
main = cli.main
def reporting_main():
    code = main(sys.argv[1:])
    loader = sys.modules.get("pydantic.plugin._loader")
    scanned = loader is not None and loader._plugins is not None  # the entry points were read
    report = {"seen": seen, "enabled_at_end": gc.isenabled(), "code": code, "plugins_scanned": scanned}
    print("SEEN " + json.dumps(report))
    return code
cli.main = reporting_main
cli.entry()
"""


def _entry(args: list[str], tmp_path: Path, **env_vars: str | None) -> dict:
    """The probe's report of `aggregator ARGS`; `env_vars` set (a str) or unset (None) variables."""
    env = {**os.environ, "AGGREGATOR_ALLOWED_ROOTS": str(tmp_path), **env_vars}
    env = {k: v for k, v in env.items() if v is not None}
    proc = subprocess.run(
        [sys.executable, "-c", ENTRY_PROBE, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("SEEN ")), None)
    assert line is not None, proc.stdout + proc.stderr
    return json.loads(line.removeprefix("SEEN "))


def test_the_console_script_collects_garbage_again_once_a_run_has_started(tmp_path):
    (tmp_path / "in.csv").write_text("id,email\n1,a@example.com\n2,bad\n")
    spec = _tiny_spec(tmp_path)
    report = _entry(["run", str(spec), "--data-dir", str(tmp_path / "data")], tmp_path)
    assert report["code"] == 0
    assert (tmp_path / "out.csv").read_text().splitlines()[1:] == ["1,a@example.com", "2,bad"]
    paused, *again = report["seen"]
    assert paused["enabled_before"] is False  # paused through the start-up
    assert paused["enabled_after"] is True and paused["frozen"] > 10_000  # the start-up's objects
    assert report["enabled_at_end"] is True
    assert all(call["enabled_before"] for call in again)  # done once; later calls change nothing


def test_the_console_script_collects_garbage_in_any_other_command(tmp_path):
    spec = _tiny_spec(tmp_path)
    report = _entry(["validate", str(spec)], tmp_path)
    assert report["code"] == 0
    assert report["seen"][0]["enabled_before"] is False and report["seen"][0]["enabled_after"] is True
    assert report["enabled_at_end"] is True


def test_the_console_script_does_not_look_for_pydantic_plugins(tmp_path):
    """pydantic reads every installed package's entry points for its plugins when it builds the
    first model (~6-9 ms of each command's start-up, more in a large environment): the command
    line turns that off (app/cli.py `main`; the product ships no plugin), unless
    PYDANTIC_DISABLE_PLUGINS is set."""
    spec = _tiny_spec(tmp_path)
    quiet = _entry(["validate", str(spec)], tmp_path, PYDANTIC_DISABLE_PLUGINS=None)
    asked = _entry(["validate", str(spec)], tmp_path, PYDANTIC_DISABLE_PLUGINS="")
    assert quiet["code"] == 0 and asked["code"] == 0
    assert quiet["plugins_scanned"] is False
    assert asked["plugins_scanned"] is True  # the user's own setting wins
