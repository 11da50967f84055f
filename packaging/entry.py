"""The bundle's `aggregator` executable (PyInstaller's script): the same entry as the console script
`aggregator = app.cli:entry`. Streaming sources run in `spawn` worker processes
(engine/streaming/worker.py); a frozen executable must let multiprocessing take over its own child
processes before the CLI parses their arguments."""

import multiprocessing

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from app.cli import entry

    entry()
