"""The one rule for timestamps from MQTT payloads (JSON and Sparkplug B).

- Missing (no field, JSON null) or 0: no timestamp. The record's `timestamp` is null, never
  1970; its `received_at` orders it.
- Outside 1990-01-01 .. receive time + 1 day: implausible (a clock never set, milliseconds sent
  where seconds are configured, microseconds where Sparkplug says milliseconds). The value is kept
  with quality `uncertain`, a null timestamp and reason `implausible_timestamp: <what, where>`,
  and the source counts it (`implausible_timestamps`) and keeps it in `last_errors`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

PLAUSIBLE_FROM = datetime(1990, 1, 1, tzinfo=UTC)
PLAUSIBLE_AHEAD = timedelta(days=1)
IMPLAUSIBLE = "implausible_timestamp"
