"""Connector config: the devices to poll and the tags to read from each.

Addresses are zero-based protocol addresses (holding register 40001 is `address: 0` in table
`holding`), which is what goes on the wire; no guessing from 4xxxx notation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.connectors.base import ConnectorConfig

Table = Literal["coil", "discrete", "holding", "input"]
DataType = Literal["bool", "bit", "int16", "uint16", "int32", "uint32", "float32", "float64", "string"]
Order = Literal["big", "little"]

BIT_TABLES = ("coil", "discrete")
REGISTER_TABLES = ("holding", "input")
# Registers per value; strings take `length` registers.
TYPE_REGISTERS = {"bit": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
MAX_REGISTERS = 125  # the protocol's limit for function codes 3 and 4
MAX_BITS = 2000  # the protocol's limit for function codes 1 and 2


class ModbusTag(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    table: Table = "holding"
    address: int = Field(ge=0, le=65535)
    type: DataType = "uint16"
    bit: int | None = Field(default=None, ge=0, le=15, description="bit within the register, for type `bit`")
    length: int | None = Field(
        default=None, ge=1, le=MAX_REGISTERS, description="registers, for type `string`"
    )
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None

    @property
    def width(self) -> int:
        """Registers (or bits, in a bit table) this tag occupies."""
        if self.table in BIT_TABLES:
            return 1
        return self.length if self.type == "string" else TYPE_REGISTERS[self.type]

    @property
    def scaled(self) -> bool:
        return self.type not in ("bool", "bit", "string")

    @model_validator(mode="after")
    def _fits_table(self) -> ModbusTag:
        where = f"tag '{self.name}' ({self.table} {self.address})"
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(
                f"{where}: type '{self.type}' cannot be read from a {self.table} table (allowed: bool)"
            )
        if self.table in REGISTER_TABLES and self.type == "bool":
            raise ValueError(
                f"{where}: type 'bool' is for coil/discrete tables; use type 'bit' with `bit` 0-15"
            )
        if self.type == "bit" and self.bit is None:
            raise ValueError(f"{where}: type 'bit' needs `bit` (0-15)")
        if self.type != "bit" and self.bit is not None:
            raise ValueError(f"{where}: `bit` is only for type 'bit'")
        if self.type == "string" and self.length is None:
            raise ValueError(f"{where}: type 'string' needs `length` (registers, 1-{MAX_REGISTERS})")
        if self.type != "string" and self.length is not None:
            raise ValueError(f"{where}: `length` is only for type 'string'")
        if self.address + self.width > 65536:
            raise ValueError(f"{where}: {self.width} registers from {self.address} run past address 65535")
        return self


class ModbusDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=0, le=65535)
    serial_port: str | None = None
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_interval_ms: int = Field(default=1000, ge=10)
    timeout_ms: int = Field(default=1000, ge=10)
    retries: int = Field(
        default=0, ge=0, le=10, description="retries of one request before it counts as failed"
    )
    max_gap: int = Field(
        default=10, ge=0, description="unused registers allowed between two tags in one request"
    )
    max_registers_per_request: int = Field(default=MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    max_bits_per_request: int = Field(default=MAX_BITS, ge=1, le=MAX_BITS)
    backoff_max_ms: int = Field(default=30_000, ge=10, description="cap of the back-off after failures")
    tags: list[ModbusTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusDevice:
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError(f"device '{self.name}': transport 'rtu' needs `serial_port` (e.g. /dev/ttyUSB0)")
        seen: set[str] = set()
        for tag in self.tags:
            if tag.name in seen:
                raise ValueError(f"device '{self.name}': tag name '{tag.name}' is used twice")
            seen.add(tag.name)
            if tag.table in REGISTER_TABLES and tag.width > self.max_registers_per_request:
                raise ValueError(
                    f"device '{self.name}', tag '{tag.name}': {tag.width} registers exceed "
                    f"max_registers_per_request ({self.max_registers_per_request})"
                )
        return self

    @property
    def url(self) -> str:
        """Where the device is, as a one-line message names it: `modbus://host:port` (unit when
        not 1), `modbus-rtu:///dev/ttyUSB0 unit 3`."""
        where = (
            f"modbus://{self.host}:{self.port}"
            if self.transport == "tcp"
            else f"modbus-rtu://{self.serial_port}"
        )
        return where if self.unit_id == 1 else f"{where} unit {self.unit_id}"

    @property
    def endpoint(self) -> str:
        where = f"{self.host}:{self.port}" if self.transport == "tcp" else str(self.serial_port)
        return f"{where} unit {self.unit_id}"


class ModbusSourceConfig(ConnectorConfig):
    devices: list[ModbusDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_devices(self) -> ModbusSourceConfig:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device names must be unique: {', '.join(dupes)} used more than once")
        return self
