"""A Modbus TCP simulator of the wind farm's revenue meters, with fault injection.

One pymodbus TCP server; each meter is a unit id. Every meter serves the same map (below) with
several types, byte orders and word orders, so that a poll exercises the whole codec, plus
`tags_per_meter - len(METER_MAP)` plain uint16 registers from holding 100 on (bulk load).

Faults, each for one unit or all (`unit=None`):
- `stall(unit)`: the request is swallowed, the client times out;
- `exception(code, unit, table, addresses)`: answer with Modbus exception `code`;
- `bad_length(unit)`: answer one register (or bit) short;
- `flip(unit)`: serve every register byte-swapped (a firmware that changed its byte order);
- `restart()`: the server goes away and comes back on the same port;
- `clear()`: no faults.

The server's datastore is our own object (pymodbus calls `async_getValues` on it), so faults are
decided per request without patching the library.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from protocols import windfarm
from protocols.modbus.codec import encode_tag
from protocols.modbus.config import BIT_TABLES, ModbusTag
from protocols.serving import serve

# The revenue meter's register map: (name, table, address, type, extra).
METER_MAP: list[dict[str, Any]] = [
    {"name": "power_kw", "table": "holding", "address": 0, "type": "float32", "unit": "kW"},
    {
        "name": "energy_kwh",
        "table": "holding",
        "address": 2,
        "type": "float64",
        "word_order": "little",
        "unit": "kWh",
    },
    {
        "name": "power_w",
        "table": "holding",
        "address": 6,
        "type": "int32",
        "word_order": "little",
        "byte_order": "little",
        "unit": "W",
    },
    {"name": "voltage_kv", "table": "holding", "address": 8, "type": "uint16", "scale": 0.01, "unit": "kV"},
    {"name": "breaker_status", "table": "holding", "address": 9, "type": "bit", "bit": 0},
    {"name": "no_output", "table": "holding", "address": 9, "type": "bit", "bit": 3},
    {
        "name": "reactive_kvar",
        "table": "holding",
        "address": 10,
        "type": "int16",
        "scale": 0.1,
        "unit": "kvar",
    },
    {
        "name": "frequency_hz",
        "table": "holding",
        "address": 11,
        "type": "float32",
        "byte_order": "little",
        "unit": "Hz",
    },
    {"name": "serial", "table": "holding", "address": 13, "type": "string", "length": 4},
    {"name": "energy_wh", "table": "holding", "address": 17, "type": "uint32", "unit": "Wh"},
    {
        "name": "voltage_v",
        "table": "input",
        "address": 0,
        "type": "uint32",
        "word_order": "little",
        "unit": "V",
    },
    {
        "name": "cabinet_temp_c",
        "table": "input",
        "address": 2,
        "type": "int16",
        "scale": 0.1,
        "offset": -40,
        "unit": "degC",
    },
    {"name": "breaker_closed", "table": "coil", "address": 0, "type": "bool"},
    {"name": "no_output_alarm", "table": "discrete", "address": 0, "type": "bool"},
]
BULK_START = 100
TABLE_OF_FUNCTION = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


def meter_tags(tags_per_meter: int = len(METER_MAP)) -> list[dict[str, Any]]:
    """The tag configs of one meter: the map, then bulk uint16 registers up to `tags_per_meter`."""
    tags = [dict(t) for t in METER_MAP]
    for i in range(max(0, tags_per_meter - len(METER_MAP))):
        tags.append({"name": f"reg_{BULK_START + i:05d}", "table": "holding", "address": BULK_START + i})
    return tags


def meter_values(t: float, meter: int, tags_per_meter: int = len(METER_MAP)) -> dict[str, Any]:
    """The engineering values meter `meter` holds at time `t` (what a poll should decode)."""
    kw = windfarm.meter_power_kw(t, meter)
    kwh = windfarm.meter_energy_kwh(t, meter)
    kv = windfarm.feeder_voltage_kv(t, meter)
    closed = windfarm.breaker_closed(t, meter)
    values: dict[str, Any] = {
        "power_kw": kw,
        "energy_kwh": kwh,
        "power_w": round(kw * 1000),
        "voltage_kv": round(kv, 2),
        "breaker_status": closed,
        "no_output": kw == 0.0,
        "reactive_kvar": round(-0.1 * kw, 1),
        "frequency_hz": 50.0 + 0.05 * ((int(t) + meter) % 5 - 2),
        "serial": f"MTR-{meter + 1:04d}",
        "energy_wh": round(kwh * 1000) % 2**32,
        "voltage_v": round(kv * 1000),
        "cabinet_temp_c": round(20.0 + kw / 1000.0, 1),
        "breaker_closed": closed,
        "no_output_alarm": kw == 0.0,
    }
    for i in range(max(0, tags_per_meter - len(METER_MAP))):
        values[f"reg_{BULK_START + i:05d}"] = (int(t) + i) % 65536
    return values


@dataclass
class Faults:
    stalled: set[int | None] = field(default_factory=set)
    exceptions: list[tuple[int, int | None, str, range]] = field(default_factory=list)
    bad_length: set[int | None] = field(default_factory=set)
    flipped: set[int | None] = field(default_factory=set)

    @staticmethod
    def hits(units: set[int | None], unit: int) -> bool:
        return None in units or unit in units


class MeterDatastore:
    """What pymodbus reads from: registers and bits per unit, with faults applied per request."""

    def __init__(self, unit_ids: list[int], tags_per_meter: int):
        self.unit_ids = list(unit_ids)
        self.tags_per_meter = tags_per_meter
        self.tags = [ModbusTag.model_validate(t) for t in meter_tags(tags_per_meter)]
        size = max(BULK_START + max(0, tags_per_meter - len(METER_MAP)), 32)
        self.tables = {
            u: {"coil": [False] * 64, "discrete": [False] * 64, "holding": [0] * size, "input": [0] * 64}
            for u in unit_ids
        }
        self.values: dict[int, dict[str, Any]] = {}
        self.faults = Faults()
        self.requests = 0

    def update(self, t: float) -> None:
        for meter, unit in enumerate(self.unit_ids):
            values = meter_values(t, meter, self.tags_per_meter)
            tables = {name: list(words) for name, words in self.tables[unit].items()}
            tables["holding"][9] = 0  # the status word is OR-ed together from its bits
            for tag in self.tags:
                words = encode_tag(tag, values[tag.name])
                target = tables[tag.table]
                if tag.type == "bit":
                    target[tag.address] |= words[0]
                elif tag.table in BIT_TABLES:
                    target[tag.address] = bool(words[0])
                else:
                    target[tag.address : tag.address + len(words)] = words
            self.tables[unit], self.values[unit] = tables, values  # swapped whole: readers see one tick

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1):
        from pymodbus.constants import ExcCodes
        from pymodbus.exceptions import NoSuchIdException

        self.requests += 1
        faults = self.faults
        if device_id not in self.tables or faults.hits(faults.stalled, device_id):
            raise NoSuchIdException(f"unit {device_id} does not answer")  # server ignores: client times out
        table = TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        for code, unit, fault_table, addresses in faults.exceptions:
            overlaps = address < addresses.stop and addresses.start < address + count
            if (unit is None or unit == device_id) and fault_table == table and overlaps:
                return ExcCodes(code)
        data = self.tables[device_id][table]
        if address + count > len(data):
            return ExcCodes.ILLEGAL_ADDRESS
        values = data[address : address + count]
        if faults.hits(faults.flipped, device_id) and table not in BIT_TABLES:
            values = [((w & 0xFF) << 8) | (w >> 8) for w in values]
        if faults.hits(faults.bad_length, device_id):
            values = values[:-1] if table not in BIT_TABLES else values[: max(0, count - 9)]
        return values

    async def async_setValues(self, device_id: int, func_code: int, address: int, values) -> Any:
        from pymodbus.constants import ExcCodes

        return ExcCodes.ILLEGAL_FUNCTION  # meters are read-only

    def device_ids(self) -> list[int]:
        return list(self.tables)


class ModbusSimulator:
    """Revenue meters on one Modbus TCP server, run on a background thread with its own loop."""

    def __init__(
        self,
        port: int = 0,
        meters: int = 4,
        tags_per_meter: int = len(METER_MAP),
        unit_ids: list[int] | None = None,
        host: str = "127.0.0.1",
        update_s: float | None = 1.0,
        frozen_at: float | None = None,
        serial_port: str | None = None,
        baudrate: int = 19200,
    ):
        self.host, self.port = host, port
        self.serial_port, self.baudrate = serial_port, baudrate  # serial_port: Modbus RTU instead of TCP
        self.unit_ids = list(unit_ids) if unit_ids else list(range(1, meters + 1))
        self.tags_per_meter = tags_per_meter
        self.update_s, self.frozen_at = update_s, frozen_at
        self.store = MeterDatastore(self.unit_ids, tags_per_meter)
        self.store.update(frozen_at if frozen_at is not None else time.time())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._updater: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ModbusSimulator:
        from engine.connectors.chatter import demote_library_logs

        demote_library_logs("pymodbus")  # its "Failed to start server" is no console line
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="modbus-simulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        self._call(self._serve())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def restart(self, down_s: float = 0.0) -> None:
        """The server goes away (connections drop) and listens again on the same port."""
        self._call(self._close_server())
        time.sleep(down_s)
        self._call(self._serve())

    def __enter__(self) -> ModbusSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------
    def stall(self, unit: int | None = None) -> None:
        self.store.faults.stalled.add(unit)

    def exception(
        self, code: int = 2, unit: int | None = None, table: str = "holding", addresses: range = range(65536)
    ) -> None:
        self.store.faults.exceptions.append((code, unit, table, addresses))

    def bad_length(self, unit: int | None = None) -> None:
        self.store.faults.bad_length.add(unit)

    def flip(self, unit: int | None = None) -> None:
        self.store.faults.flipped.add(unit)

    def clear(self) -> None:
        self.store.faults = Faults()

    # -- what the meters hold ----------------------------------------------------------------
    def values(self, unit: int) -> dict[str, Any]:
        return dict(self.store.values[unit])

    @property
    def requests(self) -> int:
        return self.store.requests

    @property
    def tag_count(self) -> int:
        return len(self.unit_ids) * len(self.store.tags)

    def connector_config(self, poll_interval_ms: int = 1000, **device: Any) -> dict[str, Any]:
        """A `modbus` connector config polling every simulated meter (one device per unit)."""
        return simulator_config(
            [(self.host, self.port, u) for u in self.unit_ids],
            self.tags_per_meter,
            poll_interval_ms,
            **device,
        )

    # -- internals ---------------------------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()

    def _call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self) -> None:
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        placeholder = SimDevice(self.unit_ids[0], simdata=[SimData(0, values=0, datatype=DataType.REGISTERS)])
        if self.serial_port:
            server = ModbusSerialServer(
                placeholder, port=self.serial_port, baudrate=self.baudrate, ignore_missing_devices=True
            )
        else:
            server = ModbusTcpServer(placeholder, address=(self.host, self.port), ignore_missing_devices=True)
        server.context = self.store  # our datastore answers (and injects the faults)
        await server.serve_forever(background=True)
        if not self.serial_port:
            self.port = server.transport.sockets[0].getsockname()[1]
        self._server = server
        if self._updater is None and self.update_s and self.frozen_at is None:
            self._updater = asyncio.create_task(self._update_forever())

    async def _update_forever(self) -> None:
        while True:
            await asyncio.sleep(self.update_s - time.time() % self.update_s)
            self.store.update(time.time())

    async def _close_server(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            for handler in list(getattr(server, "active_connections", {}).values()):
                handler.close()
            await server.shutdown()

    async def _shutdown(self) -> None:
        await self._close_server()
        if self._updater is not None:
            self._updater.cancel()
            self._updater = None


def simulator_config(
    endpoints: list[tuple[str, int, int]],
    tags_per_meter: int = len(METER_MAP),
    poll_interval_ms: int = 1000,
    **device: Any,
) -> dict[str, Any]:
    """Connector config for meters at `(host, port, unit_id)` endpoints, named meter1, meter2..."""
    return {
        "devices": [
            {
                "name": f"meter{i + 1}",
                "host": host,
                "port": port,
                "unit_id": unit,
                "poll_interval_ms": poll_interval_ms,
                "tags": meter_tags(tags_per_meter),
                **device,
            }
            for i, (host, port, unit) in enumerate(endpoints)
        ]
    }


def run_cli(port: int, tags: int, seconds: float | None = None) -> None:
    """Serve 4 meters with `tags` tags each on `port` until Ctrl-C (or `seconds`)."""
    sim = ModbusSimulator(port=port, meters=4, tags_per_meter=max(tags, len(METER_MAP)))
    sim.start()
    print(
        f"modbus simulator: tcp://{sim.host}:{sim.port} units {sim.unit_ids}, {sim.tag_count} tags",
        flush=True,
    )
    serve(sim.stop, seconds)
