"""The OPC UA source's configuration (one pydantic model; unknown keys are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from engine.connectors.base import ConnectorConfig

DEFAULT_MAX_NODES_PER_READ = 1000


class Deadband(ConnectorConfig):
    type: Literal["none", "absolute", "percent"] = Field(
        "none", description="none: every change; absolute: change >= value; percent: of the EU range"
    )
    value: float = Field(0.0, ge=0.0, description="the deadband (units of the value, or percent 0-100)")

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100.0:
            raise ValueError("a percent deadband is between 0 and 100")
        return self


class Reconnect(ConnectorConfig):
    initial_delay_s: float = Field(0.5, gt=0, description="first wait after the link is lost")
    max_delay_s: float = Field(30.0, gt=0, description="the back-off doubles up to this")
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="each wait varies by up to this fraction")


class OpcUaConfig(ConnectorConfig):
    endpoint: str = Field(..., description="opc.tcp://host:port[/path]")
    nodes: list[str] = Field(
        default_factory=list,
        description='node ids ("ns=2;s=Turbine01.Power") or browse paths from Objects '
        '("WindFarm/Turbine01/Power", or with namespaces "2:WindFarm/2:Turbine01/2:Power")',
    )
    browse_root: str | None = Field(
        None, description="a folder (node id or browse path): every variable below it is subscribed"
    )
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval_ms: float = Field(
        500.0, gt=0, description="subscription publishing (or poll) interval"
    )
    sampling_interval_ms: float = Field(100.0, ge=0, description="how often the server samples each value")
    queue_size: int = Field(1, ge=0, description="values the server queues per item between publishes")
    deadband: Deadband = Field(default_factory=Deadband)
    max_nodes_per_read: int | None = Field(
        None, gt=0, description=f"default: the server's MaxNodesPerRead, else {DEFAULT_MAX_NODES_PER_READ}"
    )
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str | None = Field(None, description="client certificate file (PEM or DER)")
    private_key: str | None = Field(None, description="client private key file (PEM or DER)")
    server_certificate: str | None = Field(None, description="pin the server's certificate (file)")
    trust_list: str | None = Field(None, description="folder of trusted server/CA certificates")
    username: str | None = None
    allow_insecure_password: bool = Field(
        False,
        description="send the password over a security None channel, in clear text (refused unless true)",
    )
    password: str | None = Field(
        None, description='a secret reference {"secret": NAME}, resolved at run time'
    )
    reconnect: Reconnect = Field(default_factory=Reconnect)
    tag_name: Literal["browse_name", "node_id"] = Field(
        "browse_name", description="browse_name: Turbine01.Power (parent.name); node_id: the node id string"
    )
    timeout_s: float = Field(4.0, gt=0, description="each request's answer timeout")

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError("the endpoint must start with opc.tcp:// (e.g. opc.tcp://127.0.0.1:4840)")
        return value

    @field_validator("password")
    @classmethod
    def _not_in_clear(cls, value: str | None, info: ValidationInfo) -> str | None:
        """On a None channel the password crosses the network as it is: refused unless asked for."""
        if (
            value is not None
            and info.data.get("security_mode") == "None"
            and not info.data.get("allow_insecure_password")
        ):
            raise ValueError(
                "a password on security_mode None would cross the network in clear text: use "
                "security_policy Basic256Sha256 with security_mode Sign or SignAndEncrypt, or set "
                "allow_insecure_password: true"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaConfig:
        if not self.nodes and not self.browse_root:
            raise ValueError("give `nodes` or `browse_root` (or both)")
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode go together: both None, or Basic256Sha256 with Sign/SignAndEncrypt"
            )
        if self.security_policy != "None" and not (self.certificate and self.private_key):
            raise ValueError(f"security_policy {self.security_policy} needs `certificate` and `private_key`")
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")
        return self
