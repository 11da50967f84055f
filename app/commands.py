"""The CLI's commands. Each returns the process exit code of spec section 7."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from app.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, print_json, start_up_done


def _engine(args: argparse.Namespace):
    """The engine on the data directory, through its one front door (engine.api)."""
    from engine.api import LocalEngine

    return LocalEngine(getattr(args, "data_dir", None), nice=0)  # the CLI: no window to keep answering


def _engine_or_service(args: argparse.Namespace):
    """The running service's API when a service owns the data directory (no lock error, the same
    output), else the engine in this process (engine/api/connect.py)."""
    from engine.api.connect import engine_for

    return engine_for(getattr(args, "data_dir", None))


def _load(path) -> dict[str, Any]:
    """The spec file read and checked (SpecError naming the file otherwise); no data directory needed."""
    from engine.api.pipelines import load_spec

    return load_spec(path)


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.errors import SpecError

    try:
        loaded = _load(args.spec)
    except SpecError as exc:
        if args.json:
            print_json({"valid": False, "file": str(args.spec), "errors": [i.to_dict() for i in exc.issues]})
            return EXIT_INVALID
        raise
    nodes = len(loaded["nodes"])
    warnings = loaded.get("warnings", [])
    if args.json:
        print_json(
            {
                "valid": True,
                "file": str(args.spec),
                "form": loaded["form"],
                "nodes": nodes,
                "errors": [],
                "warnings": warnings,
            }
        )
    else:
        for warning in warnings:
            print(f"warning: {args.spec}: {warning}", file=sys.stderr)
        print(f"{args.spec}: valid ({loaded['form']} form, {nodes} nodes)")
    return EXIT_OK


def _wait(job, wake: threading.Event, every_second: Callable[[], None] | None = None) -> Any:
    """The job's result. `wake` is set by a signal (Ctrl-C, SIGTERM) or, from here, by the job's
    end. Woken with the job still running, it was a signal: the job is cancelled, asked again every
    second until it has ended.

    The main thread wakes once a second meanwhile (nothing measurable: ~20 us of CPU) rather than
    sleeping until `wake` is set: the kernel may deliver a process's signal to any of its threads,
    and CPython runs the handler only in the main thread, at its next bytecode. A main thread
    asleep in a lock would run it only when the job ended by itself: a stream with no end would
    never see its SIGTERM. `every_second`: housekeeping between the waits (a stream's memory)."""
    import concurrent.futures

    job.future.add_done_callback(lambda _f: wake.set())
    while not wake.wait(1.0):
        if every_second is not None:
            every_second()
    while not job.done():
        job.cancel()
        concurrent.futures.wait([job.future], timeout=1.0)
    return job.result()


class _Housekeeping:
    """A real-time run's memory, as `aggregator serve` keeps its own: at most two glibc malloc
    arenas for the threads started from now on, and free heap pages given back every
    `TRIM_EVERY_S` (called once a second by `_wait`)."""

    def __init__(self) -> None:
        from app.memory import TRIM_EVERY_S, tune_malloc

        self.trim, self.every = tune_malloc(), TRIM_EVERY_S
        self.trimmed = time.monotonic()

    def __call__(self) -> None:
        if self.trim is not None and time.monotonic() - self.trimmed >= self.every:
            self.trim()
            self.trimmed = time.monotonic()


def cmd_run(args: argparse.Namespace) -> int:
    from engine.secrets import mask

    loaded = _load(args.spec)
    real_time = loaded["mode"] == "real_time"
    # A stream runs for days: its memory is kept as the service's is (app/memory.py)
    housekeeping = _Housekeeping() if real_time else None
    wake = threading.Event()  # a signal, or the job's end (_wait)
    # Ctrl-C and SIGTERM (a service manager, `kill`) cancel the run cleanly: it ends `cancelled`,
    # every destination aborts, no temporary file or stage table is left.
    stops = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, lambda *_: wake.set()) for sig in stops}
    from engine.api.connect import without_viewers

    try:
        with without_viewers(streaming=real_time), _engine_or_service(args) as engine:
            if real_time and not args.json:
                until = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
                print(f'Streaming "{loaded["name"]}" {until}...', flush=True)
            printer = _JobLines(_state_printer(), shared=_is_service(engine))
            unsubscribe = engine.subscribe(printer)
            start_up_done()  # the garbage collector runs again, for the run itself (app/cli.py)
            try:
                job = engine.runs.start(
                    loaded["document"],
                    spec_path=args.spec,
                    base_dir=args.spec.resolve().parent,
                    seconds=args.seconds if real_time else None,
                )
                printer.follow(job.id)
                record = _wait(job, wake, housekeeping)
            finally:
                unsubscribe()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    targets = record.pop("_targets", {})
    record["error"] = mask(record.get("error"))  # no secret value in --json or on stderr
    if args.json:
        print_json(record)
    else:
        print_run(record, targets)
    # An endless stream (real_time without --seconds) is meant to end with Ctrl-C: the run is
    # recorded as cancelled, as it was, but that is its normal end, not a failure.
    endless = real_time and args.seconds is None
    if record["status"] == "failed" or (record["status"] == "cancelled" and not endless):
        if not args.json:
            print(f"error: {record['error']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _is_service(engine) -> bool:
    return type(engine).__name__ == "RemoteEngine"


class _JobLines:
    """The events of one job to `printer`. An engine of this process runs this one job: every event
    is the run's. A service runs others too: only the events tagged with this job's id count, and
    those that come before the id is known (the start's answer) wait for it."""

    def __init__(self, printer, shared: bool):
        self._printer = printer
        self._shared = shared
        self._job: str | None = None
        self._early: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event) -> None:
        payload = event.to_dict()
        if not self._shared:
            self._printer(payload)
            return
        with self._lock:
            if self._job is None:
                self._early.append(payload)
                return
        if payload.get("job") == self._job:
            self._printer(payload)

    def follow(self, job_id: str) -> None:
        with self._lock:
            self._job = job_id
            early, self._early = self._early, []
        for payload in early:
            if payload.get("job") == job_id:
                self._printer(payload)


# The events `engine.service.logs.retry_line` makes a line of (a batch run's retry, a stream's
# destination retry); tests/engine/test_lazy_chain_startup.py checks the two agree.
RETRY_EVENTS = ("retrying", "sink_retry")


def _state_printer():
    """A source that goes down (or comes back), and a retry (`retry 1/3 in 2 s: <reason>`), say so
    on stderr at once, in one line."""
    lines = None  # made at the first session change: only a streaming source has sessions

    def on_event(event: dict[str, Any]) -> None:
        nonlocal lines
        line = None
        kind = event.get("event")
        if kind == "source_state":
            if lines is None:
                # here, not for every run: it loads the streaming runner (~25 ms), which a batch
                # run never uses
                from engine.api.console import SourceStateLines

                lines = SourceStateLines()
            line = lines(event)
        elif kind in RETRY_EVENTS:  # the service's log module (and logging.handlers) only then
            from engine.service.logs import retry_line

            line = retry_line(event)
        if line:
            print(line, file=sys.stderr, flush=True)

    return on_event


def print_run(record: dict[str, Any], targets: dict[str, str]) -> None:
    print(
        f'Run {record["run_id"]} of "{record["pipeline"]}": {record["status"].upper()} '
        f"in {record['duration_s']:.2f} s"
    )
    print(
        f"  rows in {record['rows_in']:,}, out {record['rows_out']:,}, rejected {record['rows_rejected']:,}"
    )
    if record["status"] == "warning" and record.get("error"):
        print(f"  warning: {record['error']}")
    nodes = record["nodes"]
    if nodes:
        width = max(len(n) for n in nodes) + 2
        print(f"  {'node':<{width}}{'rows in':>12}{'rows out':>12}{'rejected':>10}{'time':>10}")
        for nid, s in nodes.items():
            print(
                f"  {nid:<{width}}{s['rows_in']:>12,}{s['rows_out']:>12,}{s['rows_rejected']:>10,}"
                f"{s['duration_s']:>9.3f}s"
            )
    for nid, target in targets.items():
        if nodes.get(nid, {}).get("rows_in", 1) == 0:  # nothing reached it: it may not have made `target`
            print(f"  {nid}: no rows to write ({target})")
        else:
            print(f"  wrote {nid} -> {target}")


def cmd_preview(args: argparse.Namespace) -> int:
    from engine.errors import UsageError

    if args.limit < 1:
        raise UsageError("--limit must be 1 or more")
    loaded = _load(args.spec)
    ids = [n["id"] for n in loaded["nodes"]]
    if args.node and args.node not in ids:
        raise UsageError(f"--node: unknown node '{args.node}' (nodes: {', '.join(ids)})")
    with _engine_or_service(args) as engine:
        job = engine.runs.preview(loaded["document"], limit=args.limit, base_dir=args.spec.resolve().parent)
        result = _wait(job, threading.Event())
    out: dict[str, Any] = {}
    for node in loaded["nodes"]:
        nid = node["id"]
        if args.node and nid != args.node:
            continue
        ports = {port: p for (pid, port), p in result.ports.items() if pid == nid}
        stats = result.stats[nid]
        out[nid] = {
            "kind": node["kind"],
            **{k: stats[k] for k in ("rows_in", "rows_out", "rows_rejected", "duration_s")},
            **({"live_sample": True} if nid in result.live_sampled else {}),
            **({"no_data": result.live_problems[nid]} if nid in result.live_problems else {}),
            "ports": {port: {"columns": dict(p.columns), "rows": p.json_rows()} for port, p in ports.items()},
        }
    if args.json:
        print_json({"pipeline": loaded["name"], "limit": args.limit, "nodes": out})
        return EXIT_OK
    import polars as pl

    for nid, info in out.items():
        sample = "live sample" if info.get("live_sample") else "sample"
        print(
            f"== {nid} ({info['kind']}): in {info['rows_in']}, out {info['rows_out']}, "
            f"rejected {info['rows_rejected']} ({sample})"
        )
        if "no_data" in info:
            print(f"no data: {info['no_data']}")
        for port in info["ports"]:
            label = "" if port == "out" else f" [{port}]"
            df = result.ports[(nid, port)].rows
            width = max(shutil.get_terminal_size((160, 40)).columns, 120)
            with pl.Config(tbl_rows=args.limit, tbl_cols=12, fmt_str_lengths=40, tbl_width_chars=width):
                print(f"{label}\n{df}" if label else df)
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.api import RunFilter

    with _engine_or_service(args) as engine:
        rows = engine.runs.list(RunFilter(pipeline=args.pipeline, status=args.status, limit=args.limit))
        if args.json:
            for row in rows:
                row["nodes"] = {
                    s["node_id"]: {k: s[k] for k in ("rows_in", "rows_out", "rows_rejected", "duration_s")}
                    for s in engine.runs.nodes(row["run_id"])
                }
            print_json(rows)
            return EXIT_OK
    if not rows:
        print("no runs yet" + (f" for pipeline '{args.pipeline}'" if args.pipeline else ""))
        return EXIT_OK
    print(
        f"{'run id':<26}{'pipeline':<28}{'status':<12}{'started (UTC)':<22}{'secs':>8}{'in':>12}{'out':>12}{'rej':>8}"
    )
    for r in rows:
        print(
            f"{r['run_id']:<26}{(r['pipeline'] or '')[:27]:<28}{r['status'] or '':<12}"
            f"{(r['started_at'] or '')[:19]:<22}{r['duration_s'] or 0:>8.2f}{r['rows_in'] or 0:>12,}"
            f"{r['rows_out'] or 0:>12,}{r['rows_rejected'] or 0:>8,}"
        )
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.spec.schema import document_schema

    print(json.dumps(document_schema(), indent=2))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    if args.wind_farm:
        from app.windfarm_demo import run_wind_farm_demo

        with _engine_or_service(args) as engine:
            record = run_wind_farm_demo(engine, seconds=args.seconds, as_json=args.json)
        return EXIT_OK if record["status"] in ("success", "warning") else EXIT_FAILED
    from app.demo import run_demo

    with _engine_or_service(args) as engine:
        record = run_demo(engine, as_json=args.json)
    return EXIT_OK if record["status"] in ("success", "warning") else EXIT_FAILED


def cmd_query(args: argparse.Namespace) -> int:
    from app.query import cmd_query as query

    return query(args)


def cmd_logs(args: argparse.Namespace) -> int:
    from app.logs_cmd import run_logs

    return run_logs(args)


def cmd_gui(args: argparse.Namespace) -> int:
    from app.gui import run_gui

    return run_gui(
        data_dir=getattr(args, "data_dir", None),
        spec=args.spec,
        attach=getattr(args, "attach", None),
        token=getattr(args, "token", None),
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.simulate import run_simulator

    return run_simulator(args.protocol, port=args.port, tags=args.tags, seconds=args.seconds)


def cmd_secret(args: argparse.Namespace) -> int:
    from engine.errors import SecretError, UsageError

    with _engine_or_service(args) as engine:  # a service owns the data directory: set it there
        if args.secret_command == "check":
            try:
                engine.connectors.check_secret(args.name)
            except SecretError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            print(f"secret '{args.name}' is set")
            return EXIT_OK
        if sys.stdin.isatty():
            import getpass

            value = getpass.getpass(f"value of secret '{args.name}': ")
        else:
            value = sys.stdin.read().rstrip("\n")
        if not value:
            raise UsageError("an empty secret is not stored")
        where = engine.connectors.set_secret(args.name, value, use_keyring=not args.file_store)
    print(f"secret '{args.name}' stored in the {where}")
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from app.token_cmd import cmd_token as token

    return token(args)


__all__ = ["EXIT_FAILED", "EXIT_INVALID"]


def cmd_users(args: argparse.Namespace) -> int:
    from app.users_cmd import cmd_users as users

    return users(args)


def cmd_login(args: argparse.Namespace) -> int:
    from app.users_cmd import cmd_login as login

    return login(args)


def cmd_audit(args: argparse.Namespace) -> int:
    from app.audit_cmd import cmd_audit as audit

    return audit(args)
