"""Where the data directory is by default, in a module that imports nothing heavy: the CLI asks it
before it knows whether a service owns the directory (then it needs no engine of its own)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """$AGGREGATOR_HOME, else the user's data folder (platformdirs)."""
    env = os.environ.get("AGGREGATOR_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("data-aggregator", appauthor=False))
