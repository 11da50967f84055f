"""The Windows service "DataAggregator": `aggregator serve` under the Service Control Manager.

pywin32's `ServiceFramework` answers the SCM; the work is a child process, `aggregator.exe serve`
(the same command as on Linux), kept by `ServeSupervisor`: started with the service, stopped with it
(Ctrl+Break, as serve takes SIGTERM: runs in flight finish, stores close), and when the child dies
on its own the service stops with an error so the SCM's recovery actions (set by the installer,
packaging/windows/aggregator.iss: restart after 5 s) restart it, as Restart=on-failure does on Linux.

Built as aggregator-service.exe (packaging/windows/aggregator.spec); `aggregator-service.exe install
| remove | start | stop` are pywin32's own commands. Everything but the `ServiceFramework` class is
plain Python and is tested on Linux (tests/packaging/test_winservice.py); this module imports there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

SERVICE_NAME = "DataAggregator"
DISPLAY_NAME = "Data Aggregator"
DESCRIPTION = "Industrial edge data pipelines, historian and HTTP API (aggregator serve)."
STOP_TIMEOUT_S = 45.0  # as TimeoutStopSec in the systemd unit: serve's own --stop-timeout is 10 s

try:  # pywin32: Windows only
    import servicemanager  # type: ignore[import-not-found]
    import win32event  # type: ignore[import-not-found]
    import win32service  # type: ignore[import-not-found]
    import win32serviceutil  # type: ignore[import-not-found]

    HAVE_PYWIN32 = True
except ImportError:
    HAVE_PYWIN32 = False


def default_data_dir(environ: dict[str, str] | None = None) -> Path:
    """%ProgramData%\\DataAggregator: the service's data (LocalSystem has no user profile of use)."""
    env = os.environ if environ is None else environ
    base = env.get("AGGREGATOR_HOME") or str(Path(env.get("ProgramData", r"C:\ProgramData")) / SERVICE_NAME)
    return Path(base)


def cli_executable(service_exe: str | None = None) -> list[str]:
    """The command that runs the CLI beside this service: aggregator.exe in the same folder when
    frozen, else this Python with `-m app.cli`."""
    if getattr(sys, "frozen", False) or service_exe:
        folder = Path(service_exe or sys.executable).resolve().parent
        return [str(folder / ("aggregator.exe" if os.name == "nt" else "aggregator"))]
    return [sys.executable, "-m", "app.cli"]


def serve_command(cli: list[str], data_dir: Path, listen: str | None = None) -> list[str]:
    command = [*cli, "serve", "--data-dir", str(data_dir)]
    if listen:
        command += ["--listen", listen]
    return command


class ServeSupervisor:
    """One `aggregator serve` child process: start, poll, stop politely then for good."""

    def __init__(
        self, command: list[str], stop_timeout_s: float = STOP_TIMEOUT_S, log_path: Path | None = None
    ):
        self.command = command
        self.stop_timeout_s = stop_timeout_s
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        flags = 0
        if os.name == "nt":  # its own process group, so that Ctrl+Break reaches it alone
            flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        out = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it; closed in stop()
        self.process = subprocess.Popen(
            self.command, stdout=out, stderr=subprocess.STDOUT, creationflags=flags
        )
        if out is not subprocess.DEVNULL:
            out.close()  # the child holds its own handle
        return self.process

    def exited(self) -> int | None:
        """The child's exit code once it has ended, else None."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> int | None:
        """Ask serve to stop (Ctrl+Break on Windows, SIGTERM elsewhere), wait up to the timeout, then
        kill it. Its exit code (None when it was never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            polite = signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGTERM  # type: ignore[attr-defined]
            try:
                self.process.send_signal(polite)
                return self.process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
            except OSError:
                pass
        return self.process.wait()


if HAVE_PYWIN32:  # pragma: no cover - Windows only

    class AggregatorService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args):
            super().__init__(args)
            self.stop_event = win32event.CreateEvent(None, 0, 0, None)
            data_dir = default_data_dir()
            self.supervisor = ServeSupervisor(
                serve_command(cli_executable(), data_dir), log_path=data_dir / "logs" / "service-console.log"
            )

        def SvcStop(self):
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=int(STOP_TIMEOUT_S * 1000))
            win32event.SetEvent(self.stop_event)

        def SvcDoRun(self):
            servicemanager.LogInfoMsg(f"{SERVICE_NAME}: starting {' '.join(self.supervisor.command)}")
            self.supervisor.start()
            self.ReportServiceStatus(win32service.SERVICE_RUNNING)
            while win32event.WaitForSingleObject(self.stop_event, 1000) == win32event.WAIT_TIMEOUT:
                code = self.supervisor.exited()
                if code is not None:  # died on its own: fail, so that the recovery actions restart it
                    servicemanager.LogErrorMsg(
                        f"{SERVICE_NAME}: aggregator serve ended with exit code {code}"
                    )
                    raise SystemExit(code or 1)
            self.supervisor.stop()


def main(argv: list[str] | None = None) -> int:
    """aggregator-service.exe: with no arguments the SCM is starting it; otherwise pywin32's
    install/remove/start/stop/debug commands."""
    argv = sys.argv if argv is None else argv
    if not HAVE_PYWIN32:
        print(
            "error: the Windows service needs Windows and pywin32 (on Linux: aggregator service install)",
            file=sys.stderr,
        )
        return 2
    if len(argv) == 1:  # pragma: no cover - Windows only
        servicemanager.Initialize()
        servicemanager.PrepareToHostSingle(AggregatorService)
        servicemanager.StartServiceCtrlDispatcher()
        return 0
    win32serviceutil.HandleCommandLine(AggregatorService, argv=argv)  # pragma: no cover
    return 0


if __name__ == "__main__":
    sys.exit(main())
