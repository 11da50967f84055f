"""The one rule for timestamps, for every protocol (MQTT JSON and Sparkplug B, DNP3 event times,
OPC UA source times).

- Missing (no field, JSON null) or 0: no timestamp. The record's `timestamp` is null, never
  1970; its `received_at` orders it.
- Outside 1990-01-01 .. receive time + 1 day: implausible (a clock never set, which counts up from
  1970 with its uptime; milliseconds sent where seconds are configured, microseconds where
  Sparkplug says milliseconds). The value is kept with quality `uncertain` (bad stays bad) and
  reason `implausible_timestamp: <what, where>`; the source counts it (`implausible_timestamps`)
  and logs it with its item. The timestamp is null, except for OPC UA, whose rule for "no source
  time" applies: the server's time, else the receive time.
- Modbus devices have no clock: the poll time is the timestamp.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

PLAUSIBLE_FROM = datetime(1990, 1, 1, tzinfo=UTC)
PLAUSIBLE_AHEAD = timedelta(days=1)
IMPLAUSIBLE = "implausible_timestamp"
# The same bounds in epoch microseconds, for the protocols that compare raw numbers.
PLAUSIBLE_FROM_US = (PLAUSIBLE_FROM - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
PLAUSIBLE_AHEAD_US = PLAUSIBLE_AHEAD // timedelta(microseconds=1)


def implausible(what: str) -> str:
    """The reason of an implausible timestamp: `implausible_timestamp: <what> is outside
    1990-01-01..now+1 day` (`what` names the time and shows it)."""
    return f"{IMPLAUSIBLE}: {what} is outside {PLAUSIBLE_FROM.date().isoformat()}..now+1 day"
