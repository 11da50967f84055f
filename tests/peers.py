"""Third-party test peers that cannot live in the project's venv, because their pins clash with
ours: each one is installed in a directory of its own under the venv, `<venv>/peers/<name>`, and
the tests run it as a subprocess with `PYTHONPATH=<that directory>`, never importing it.

- pysparkplug 0.6.1 (a Sparkplug B implementation nobody here wrote) requires paho-mqtt<2; the
  project uses paho-mqtt>=2.1. Its directory holds pysparkplug with its own paho-mqtt 1.x.

    python -m tests.peers     # install the missing ones; `python -m tests` runs it before pytest

A test calls `require(name)`: the peer's directory, or a skip when it is not installed (a failure
under REQUIRE_SERVICES=1, as CI runs, so that nothing skips silently).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PEERS = {"pysparkplug": "pysparkplug==0.6.1"}
_MARKER = ".requirement"


def peer_dir(name: str) -> Path:
    return Path(sys.prefix) / "peers" / name


def installed(name: str) -> bool:
    marker = peer_dir(name) / _MARKER
    return marker.is_file() and marker.read_text().strip() == PEERS[name]


def install(name: str) -> None:
    """pip install the peer into its own directory (replacing an older one), all or nothing."""
    target = peer_dir(name)
    partial = target.with_name(f"{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-warn-conflicts", "--target", str(partial)]
    subprocess.run([*cmd, PEERS[name]], check=True)
    (partial / _MARKER).write_text(PEERS[name] + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def require(name: str) -> Path:
    if installed(name):
        return peer_dir(name)
    import pytest

    message = f"third-party peer {PEERS[name]} is not installed in {peer_dir(name)} (python -m tests.peers)"
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} and REQUIRE_SERVICES=1")
    pytest.skip(message)


def main() -> None:
    for name, requirement in PEERS.items():
        if installed(name):
            print(f"{requirement}: installed in {peer_dir(name)}", flush=True)
        else:
            print(f"{requirement}: installing in {peer_dir(name)}", flush=True)
            install(name)


if __name__ == "__main__":
    main()
