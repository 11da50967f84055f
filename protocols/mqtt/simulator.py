"""A Sparkplug B edge node for the wind farm: one gateway publishing its turbines to a broker.

Edge node `<group>/<edge>` (default `WindFarm/Gateway1`) with node metrics `bdSeq`,
`Node Control/Rebirth` and the met mast's `MetMast/WindSpeed`; one device per turbine
(`Turbine01`...) with WindSpeed, Power, RotorRpm, GearboxTemp (and Aux05... when `tags` > 4),
values from `protocols.windfarm` at the publish time. Births carry names and aliases, data
messages aliases only, as real edge nodes do. NDEATH is the MQTT will, so the broker announces
the death when the link breaks.

Sparkplug B 3.0 edge-node rules: every NBIRTH of a connection (a rebirth too) carries the bdSeq
of that connection's will; the clean-stop NDEATH carries the same bdSeq and no seq; `seq` runs
0..255 from the NBIRTH (0) over every NBIRTH/DBIRTH/NDATA/DDATA. An NCMD `Node Control/Rebirth` =
true from a host makes it publish its births again (counted in `rebirths`).

Faults: `kill()` drops the TCP connection without a DISCONNECT (the broker publishes the NDEATH
will; the node reconnects and re-births with the next bdSeq), `rebirth()` sends fresh births,
`lose(n)` uses up the next n sequence numbers without publishing (a host sees a sequence gap).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from protocols import windfarm
from protocols.mqtt import sparkplug as sp
from protocols.serving import serve

BASE_TAGS: list[tuple[str, Callable[[float, int], float]]] = [
    ("WindSpeed", windfarm.wind_speed),
    ("Power", windfarm.turbine_power_kw),
    ("RotorRpm", windfarm.rotor_rpm),
    ("GearboxTemp", windfarm.gearbox_temp_c),
]


def turbine_name(index: int) -> str:
    return f"Turbine{index + 1:02d}"


def tag_names(tags: int) -> list[str]:
    return [name for name, _ in BASE_TAGS[:tags]] + [f"Aux{i + 1:02d}" for i in range(len(BASE_TAGS), tags)]


def now_ms_exact() -> float:
    """Now, rounded to the millisecond a Sparkplug timestamp carries, so that a reader can
    recompute every value from the record's timestamp exactly."""
    return (time.time_ns() // 1_000_000) / 1000


def tag_value(name: str, t: float, turbine: int) -> float:
    for base, fn in BASE_TAGS:
        if base == name:
            return fn(t, turbine)
    return round(windfarm.wind_speed(t, turbine) * 0.1 + int(name[3:]), 3)  # Aux tags: anything alive


class SparkplugSimulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        group: str = "WindFarm",
        edge: str = "Gateway1",
        turbines: int = 5,
        tags: int = 4,
        interval_s: float = 1.0,
    ):
        self.host, self.port, self.group, self.edge = host, port, group, edge
        self.turbines, self.tags, self.interval_s = turbines, max(1, tags), interval_s
        self.bd_seq = 0  # the bdSeq of the next connection's will
        self.birth_bd_seq: int | None = None  # the bdSeq of this connection (its will and NBIRTH)
        self.seq = 0
        self.published = 0
        self.rebirths = 0  # rebirths asked for by a host (NCMD)
        self._lose = 0
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._born = threading.Event()
        self._lock = threading.RLock()  # births are published as one block

    @property
    def tag_count(self) -> int:
        return 1 + self.turbines * self.tags

    def topic(self, message_type: str, device: str | None = None) -> str:
        return str(sp.Topic(self.group, message_type, self.edge, device))

    def alias(self, turbine: int, tag: int) -> int:
        return 100 + turbine * 1000 + tag  # 1..99 are node metrics

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{self.edge}-{uuid.uuid4().hex[:6]}"
        )
        client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        self._set_will()
        client.connect(self.host, self.port, keepalive=10)
        client.loop_start()
        if not self._born.wait(timeout):
            self.stop()
            raise TimeoutError(f"sparkplug simulator: no CONNACK from mqtt://{self.host}:{self.port}")
        self._thread = threading.Thread(target=self._run, name="sparkplug-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._client is not None:
            # A clean goodbye: publish the death ourselves, then disconnect (the will is discarded).
            # It is the death of this connection's birth: its bdSeq, and no seq (NDEATH has none).
            if self.birth_bd_seq is not None and self._born.is_set():
                death = sp.encode_payload(
                    [sp.Metric("bdSeq", self.birth_bd_seq, sp.INT64)], timestamp=round(time.time() * 1000)
                )
                info = self._client.publish(self.topic("NDEATH"), death, qos=1)
                with contextlib.suppress(RuntimeError, ValueError):  # not connected: the will goes
                    info.wait_for_publish(5)
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def kill(self) -> None:
        """Break the TCP connection without a DISCONNECT: the broker publishes the NDEATH will."""
        self._born.clear()
        sock = self._client.socket()
        if sock is not None:
            import socket

            sock.shutdown(socket.SHUT_RDWR)

    def rebirth(self) -> None:
        self._births()

    def lose(self, n: int = 1) -> None:
        """The next `n` messages are lost on the way: their seq numbers are used, nothing is sent."""
        with self._lock:
            self._lose += n

    # ---- publishing ------------------------------------------------------------------------------

    def _set_will(self) -> None:
        death = sp.encode_payload([sp.Metric("bdSeq", self.bd_seq, sp.INT64)])
        self._client.will_set(self.topic("NDEATH"), death, qos=1)

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            return
        client.subscribe(self.topic("NCMD"), qos=1)
        self.birth_bd_seq = self.bd_seq  # the will of this connection carries it
        self._births()
        self._born.set()
        # The next connection's will carries the next bdSeq (Sparkplug's birth/death pairing).
        self.bd_seq = (self.bd_seq + 1) % 256
        self._set_will()

    def _on_message(self, _client, _userdata, message) -> None:
        """NCMD from a host: `Node Control/Rebirth` = true asks for the births again."""
        try:
            payload = sp.decode_payload(message.payload)
        except sp.SparkplugError:
            return
        for pm in payload.metrics:
            if pm.name == sp.REBIRTH_METRIC and pm.boolean_value:
                self.rebirths += 1
                self._births()
                return

    def _births(self) -> None:
        now = now_ms_exact()
        node = [
            sp.Metric("bdSeq", self.birth_bd_seq, sp.INT64),
            sp.Metric(sp.REBIRTH_METRIC, False, sp.BOOLEAN, alias=1),
            sp.Metric("MetMast/WindSpeed", windfarm.wind_speed(now, 99), sp.DOUBLE, alias=2),
        ]
        with self._lock:  # no data message between the births: seq 0, 1, 2... in order
            self.seq = 0
            self._publish(self.topic("NBIRTH"), node, now)
            for turbine in range(self.turbines):
                metrics = [
                    sp.Metric(name, tag_value(name, now, turbine), sp.DOUBLE, alias=self.alias(turbine, i))
                    for i, name in enumerate(tag_names(self.tags))
                ]
                self._publish(self.topic("DBIRTH", turbine_name(turbine)), metrics, now)

    def _publish(self, topic: str, metrics: list[sp.Metric], now: float | None = None) -> None:
        ms = round((now or time.time()) * 1000)
        with self._lock:
            seq, self.seq = self.seq, (self.seq + 1) % 256
            if self._lose > 0:
                self._lose -= 1
                return
            payload = sp.encode_payload(metrics, timestamp=ms, seq=seq)
            self._client.publish(topic, payload, qos=0)
            self.published += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._born.is_set():
                continue
            now = now_ms_exact()
            self._publish(
                self.topic("NDATA"), [sp.Metric(None, windfarm.wind_speed(now, 99), sp.DOUBLE, alias=2)], now
            )
            for turbine in range(self.turbines):
                metrics = [
                    sp.Metric(None, tag_value(name, now, turbine), sp.DOUBLE, alias=self.alias(turbine, i))
                    for i, name in enumerate(tag_names(self.tags))
                ]
                self._publish(self.topic("DDATA", turbine_name(turbine)), metrics, now)


def simulator_config(group: str = "WindFarm", host: str = "127.0.0.1", port: int = 1883) -> dict[str, Any]:
    """A `sparkplug_b` connector config that reads the simulator's group."""
    return {"host": host, "port": port, "topics": [f"spBv1.0/{group}/#"], "sparkplug": {"group_ids": [group]}}


def run_cli(port: int = 1883, tags: int = 4, seconds: float | None = None, host: str = "127.0.0.1") -> None:
    """Publish 5 turbines with `tags` tags each to the broker at host:port until Ctrl-C (or `seconds`)."""
    sim = SparkplugSimulator(host=host, port=port, tags=tags)
    sim.start()
    print(
        f"sparkplug simulator: mqtt://{host}:{port} spBv1.0/{sim.group}/+/{sim.edge}, {sim.tag_count} tags",
        flush=True,
    )
    serve(sim.stop, seconds)
