"""Configuration of a DNP3 master source: where the outstation is, how often to poll, which points
become which tags."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.connectors.base import ConnectorConfig

PointType = Literal[
    "binary_input",
    "double_bit_binary",
    "analog_input",
    "counter",
    "frozen_counter",
    "binary_output_status",
    "analog_output_status",
]

# The prefix of a default tag name (`AI.3`): the short names DNP3 engineers use in point lists.
PREFIXES: dict[str, str] = {
    "binary_input": "BI",
    "double_bit_binary": "DBI",
    "analog_input": "AI",
    "counter": "CTR",
    "frozen_counter": "FCTR",
    "binary_output_status": "BO",
    "analog_output_status": "AO",
}


def default_tag(point_type: str, index: int) -> str:
    return f"{PREFIXES[point_type]}.{index}"


class Dnp3Point(ConnectorConfig):
    """One outstation point and the tag it becomes. `value = raw * scale` (analogs and counters)."""

    type: PointType
    index: int = Field(ge=0, le=65535)
    tag: str | None = Field(default=None, min_length=1, description="default: BI.0, AI.3, CTR.1 ...")
    scale: float = 1.0
    unit: str | None = None

    @property
    def tag_name(self) -> str:
        return self.tag or default_tag(self.type, self.index)


class Dnp3SourceConfig(ConnectorConfig):
    host: str = "127.0.0.1"
    port: int = Field(default=20000, ge=1, le=65535)
    master_address: int = Field(default=1, ge=0, le=65519)
    outstation_address: int = Field(default=10, ge=0, le=65519)
    integrity_poll_interval_s: float = Field(default=60.0, gt=0, description="class 0 (+1, 2, 3) poll")
    event_poll_interval_s: float = Field(default=5.0, gt=0, description="class 1, 2, 3 poll")
    accept_unsolicited: bool = True
    timeout_ms: int = Field(default=3000, ge=50, le=600_000)
    reconnect_initial_s: float = Field(
        default=0.5, gt=0, description="first wait after a lost link (doubles)"
    )
    reconnect_max_s: float = Field(default=30.0, gt=0, description="backoff ceiling after a lost link")
    time_sync: Literal["none", "lan", "non_lan"] = Field(
        default="none",
        description="answer the outstation's NEED_TIME (IIN1.4) with a LAN or non-LAN time sync",
    )
    timed_events: bool = Field(
        default=False,
        description="event polls ask for the timed event variations (g2v2, g4v2, g22v5, g23v5, g32v3, "
        "g11v2, g42v3) so every polled event carries the outstation's time",
    )
    allow_controls: bool = Field(
        default=False,
        description="CROB and analog output commands (operate_binary/operate_analog) are refused unless true",
    )
    points: list[Dnp3Point] = Field(default_factory=list, description="unlisted points get BI.0, AI.3...")

    @model_validator(mode="after")
    def _unique_points(self) -> Dnp3SourceConfig:
        seen_points: set[tuple[str, int]] = set()
        seen_tags: set[str] = set()
        for i, point in enumerate(self.points):
            key = (point.type, point.index)
            if key in seen_points:
                raise ValueError(f"points[{i}]: {point.type} {point.index} is listed twice")
            if point.tag_name in seen_tags:
                raise ValueError(f"points[{i}]: tag '{point.tag_name}' is used twice (tags must be unique)")
            seen_points.add(key)
            seen_tags.add(point.tag_name)
        return self

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0
