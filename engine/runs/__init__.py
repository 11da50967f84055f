"""What every run shares, in one home: the run record (begin, finish), retry/backoff and time text.

- `timefmt.iso_utc`: the one way a moment is written (ISO 8601, UTC, `Z`, microseconds).
- `retry.backoff_delays` / `retry.retry_delays`: the one back-off (the batch runner's retries, the
  streaming sinks' retries, the field protocols' reconnect loops).
- `record.begin_run` / `record.finish_run`: a run's record as `running`, then its one finish
  (batch and streaming runs alike).
"""
