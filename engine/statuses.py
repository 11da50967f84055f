"""The statuses a run record can have (light: the CLI's parser and the GUI list them)."""

from __future__ import annotations

# `interrupted`: the run's process ended (killed, crashed, the machine went down) without finishing
# it; the next process that opened the data directory found it so (engine/recovery.py).
RUN_STATUSES = ("running", "retrying", "success", "warning", "failed", "cancelled", "interrupted")
UNFINISHED = ("running", "retrying")  # a run in one of these has an owner process still at work
