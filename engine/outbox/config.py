"""The settings every remote destination shares (`postgresql`, `sparkplug_b`/`mqtt` publish, `nats`,
`webhook`): how it delivers, and the bounds of its outbox.

A remote destination's SinkConfig subclasses `RemoteSinkConfig` and its connector class implements
`make_target(config, ctx, name) -> UpstreamTarget` (engine/outbox/target.py); its `make_sink`
returns `engine.outbox.sinks.remote_sink(cls, config, ctx, name)`, which writes through the outbox
(`store_and_forward`) or straight to the upstream inside the run's commit (`direct`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.connectors.base import ConnectorConfig

Delivery = Literal["store_and_forward", "direct"]
Overflow = Literal["drop_oldest", "block"]


class RemoteSinkConfig(ConnectorConfig):
    delivery: Delivery | None = Field(
        None,
        description=(
            "store_and_forward: write through the durable local outbox and forward from it (the "
            "default for real_time pipelines and for every pipeline the service runs); direct: write "
            "to the upstream inside the run's commit (the default for a one-shot `aggregator run`)"
        ),
    )
    key: list[str] | None = Field(
        None,
        description=(
            "the columns that identify a record, for the idempotency key (default: tag and "
            "timestamp for tag data, else the record's place in the outbox)"
        ),
    )
    max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="the outbox's cap for this destination, in bytes"
    )
    overflow: Overflow = Field(
        "drop_oldest",
        description="at the cap: drop the oldest records (counted, alarmed, written as a gap) or block the pipeline",
    )
    backfill_rows_per_s: int | None = Field(
        None, ge=1, description="throttle for draining a backlog; live data is never throttled"
    )
    max_tries: int = Field(
        5, ge=1, le=100, description="a record the upstream refuses this many times goes to quarantine"
    )
