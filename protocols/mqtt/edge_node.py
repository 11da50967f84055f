"""The `sparkplug_b` destination: this box is a Sparkplug B 3.0 edge node (docs/upstream-sparkplug.md).

Session (paho-mqtt 2 on its own network thread, MQTT 3.1.1, clean session):
- The MQTT Will is the NDEATH (QoS 1, not retained) with the connection's `bdSeq` (Int64). The
  bdSeq of the next connection is written to the data directory (atomic write, fsync) before the
  NBIRTH of this one goes out, so that a restart, even after kill -9, goes on with the next value
  (0..255, wrapping) and never reuses the one a host may still pair with a death.
- On every CONNACK: subscribe to `NCMD/<edge node>` (QoS 1), then the births: NBIRTH (seq 0,
  `bdSeq`, `Node Control/Rebirth` = false without an alias, every node metric with name, alias,
  datatype and current value) and one DBIRTH per device. Births and data are QoS 0, not retained,
  as the spec requires; `seq` runs 0..255 over every message from the NBIRTH.
- NCMD `Node Control/Rebirth` = true: the births again (data waits: one lock orders everything).
- A metric not in this session's births is never sent by alias: a new metric of the node or of a
  born device makes a full rebirth first; a new device gets its DBIRTH.
- Data: NDATA/DDATA with aliases only, up to `max_metrics_per_message` metrics per payload, in
  timestamp order; `historical=True` (backlog after an outage) sets `is_historical`.
- `deliver` returns once the broker has taken every message: the data is QoS 0 (the spec), so
  after the last one the node sends an UNSUBSCRIBE of an unused topic on the same connection and
  waits for its UNSUBACK; the broker handles a connection's packets in order, so the UNSUBACK
  acknowledges everything before it. A connection lost meanwhile is a retryable DeliveryError:
  the forwarder sends the rows again, and a host may see some values twice (same metric, same
  timestamp). Sparkplug has no dedupe header: consumers deduplicate on metric + timestamp, or on
  the `_key` property (`key_property: true`).
- `close()` publishes the NDEATH itself (QoS 1, acknowledged) before DISCONNECT.
- `primary_host_id`: the births wait for that host's STATE online (spBv1.0/STATE/<id>); its offline
  STATE makes the node publish its NDEATH and disconnect. Not born, `deliver` fails retryably and
  the outbox keeps the data (Sparkplug's store and forward).

Tag records map to metrics named as the tag, on the node or on a device (`device_id`, or
`device_column` per record): `value` -> Double, `value_text` -> String (the type of the first value
seen; a later value of the other kind is sent as a string, or as null for a text on a Double
metric, counted `type_mismatch`); quality other than good -> property `Quality` (OPC code).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from engine.connectors.base import one_line_error
from engine.outbox.target import KEY_COLUMN, DeliveryError
from protocols.mqtt import sparkplug as sp
from protocols.mqtt.publish import BrokerLink, SparkplugPublishConfig, check_broker

REBIRTH = sp.REBIRTH_METRIC
NODE: None = None  # the device key of node metrics
Log = Callable[[str, str, str | None], None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def bd_seq_file(data_dir: Path, group: str, edge: str) -> Path:
    return Path(data_dir) / "sparkplug" / f"{quote(group, safe='')}~{quote(edge, safe='')}.json"


def load_bd_seq(path: Path) -> tuple[int, str | None]:
    """The bdSeq for the next connection (0 when none was saved) and a problem, if the file was bad."""
    try:
        value = json.loads(path.read_text())["next_bd_seq"]
        if isinstance(value, int) and 0 <= value <= 255:
            return value, None
        return 0, f"{path}: next_bd_seq {value!r} is not 0..255; starting at 0"
    except FileNotFoundError:
        return 0, None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return 0, f"{path}: unreadable ({one_line_error(exc)}); starting at 0"


def save_bd_seq(path: Path, value: int) -> None:
    """Atomic and durable: a temporary file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"next_bd_seq": value}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SparkplugEdgeNode:
    """The `sparkplug_b` destination's UpstreamTarget (engine/outbox/target.py)."""

    def __init__(
        self,
        config: SparkplugPublishConfig,
        data_dir: Path,
        name: str = "sparkplug_b",
        log: Log | None = None,
    ):
        self.config, self.name = config, name
        self.log: Log = log or (lambda level, msg, node=None: None)
        self.group, self.edge = config.group_id, config.edge_node_id
        self.state_file = bd_seq_file(data_dir, self.group, self.edge)
        self.lock = threading.RLock()  # births, data and seq: one message stream
        self.catalog: dict[str | None, dict[str, tuple[int, int]]] = {
            NODE: {}
        }  # device -> name -> (alias, type)
        self.last: dict[tuple[str | None, str], tuple[Any, int | None, int | None]] = {}
        self.next_alias = 1
        self.seq = 0
        self.bd_seq = 0  # the bdSeq of the will of the next CONNECT
        self.birth_bd_seq: int | None = None  # the bdSeq of this connection (its will and NBIRTH)
        self.born: set[str | None] = set()  # what has a birth in this session
        self.counters: Counter[str] = Counter()
        self.link: BrokerLink | None = None
        self._acked: set[int] = set()
        self.session_born = False  # this connection's births are out: data may follow
        self.host_online: bool | None = None  # the primary host's last STATE (None: none seen)
        self.state_ts = -1  # the timestamp of that STATE (an older one is stale)
        self.state_topic = (
            f"{sp.NAMESPACE}/STATE/{config.primary_host_id}" if config.primary_host_id else None
        )
        self.barrier_topic = f"$aggregator/barrier/{uuid.uuid4().hex}"

    # ---- topics ------------------------------------------------------------------------------

    def topic(self, message_type: str, device: str | None = None) -> str:
        return str(sp.Topic(self.group, message_type, self.edge, device))

    def describe_target(self) -> str:
        return f"mqtt://{self.config.host}:{self.config.port} {sp.NAMESPACE}/{self.group}/+/{self.edge}"

    def check(self) -> None:
        check_broker(self.config)

    # ---- session -----------------------------------------------------------------------------

    def open(self) -> None:
        with self.lock:
            if self.link is None:
                self.bd_seq, problem = load_bd_seq(self.state_file)
                if problem:
                    self.log("warning", problem, self.name)
                client_id = self.config.client_id or f"spb-{self.edge}-{uuid.uuid4().hex[:8]}"
                link = self.link = BrokerLink(self.config, client_id)
                link.on_connected = self._on_connected
                link.client.on_message = self._on_message
                link.client.on_unsubscribe = self._on_unsubscribe
                self._set_will(link.client)
                link.start()
            link = self.link
        try:
            link.wait_connected(self.config.connect_timeout)
        except Exception:
            self.close()  # no client left reconnecting behind the forwarder's back
            raise

    def _set_will(self, client: Any) -> None:
        client.will_set(self.topic("NDEATH"), sp.death_payload(self.bd_seq), qos=1, retain=False)

    def _on_connected(self, client: Any) -> None:
        """paho's thread, after CONNACK: bdSeq saved, NCMD subscribed, births out."""
        with self.lock:
            self.birth_bd_seq = self.bd_seq
            self.bd_seq = (self.bd_seq + 1) % 256
            save_bd_seq(self.state_file, self.bd_seq)  # before the birth: a restart never reuses it
            self._set_will(client)  # the will of paho's next CONNECT
            self.session_born = False
            client.subscribe(self.topic("NCMD"), qos=1)
            self.counters["connects"] += 1
            if self.state_topic is None:
                self._births(client)
            else:  # the births wait for the primary host's STATE online (retained: it comes at once)
                self.host_online = None
                client.subscribe(self.state_topic, qos=1)

    def _on_message(self, client: Any, _userdata: Any, message: Any) -> None:
        try:  # nothing may escape into paho's network thread: it would end it
            if message.topic == self.state_topic:
                self._host_state(client, message)
            else:
                self._command(client, message)
        except Exception as exc:
            self.counters["callback_errors"] += 1
            self.log("error", f"{message.topic}: {one_line_error(exc)}", self.name)

    def _host_state(self, client: Any, message: Any) -> None:
        """The primary host's STATE (Sparkplug 3.0: JSON `{"online": bool, "timestamp": ms}`,
        retained). Online: the births. Offline: NDEATH, and the node disconnects; the forwarder
        reconnects later, and the node waits for the host again."""
        try:
            state = json.loads(message.payload)
            online, ts = state["online"], int(state.get("timestamp", 0))
            if not isinstance(online, bool):
                raise ValueError(f"online is {online!r}, not true or false")
        except Exception as exc:
            self.counters["bad_host_states"] += 1
            self.log(
                "warning", f"{message.topic}: not a Sparkplug 3.0 STATE: {one_line_error(exc)}", self.name
            )
            return
        with self.lock:
            if ts < self.state_ts:
                self.counters["stale_host_states"] += 1
                return
            self.state_ts, self.host_online = ts, online
            if online and not self.session_born:
                self.log("info", f"primary host {self.config.primary_host_id} is online: births", self.name)
                self._births(client)
            elif not online and self.session_born:
                self.log("warning", f"primary host {self.config.primary_host_id} went offline", self.name)
                self.session_born = False
                client.publish(
                    self.topic("NDEATH"), sp.death_payload(self.birth_bd_seq or 0, _now_ms()), qos=1
                )
                client.disconnect()

    def _command(self, client: Any, message: Any) -> None:
        """NCMD `Node Control/Rebirth` = true: the births again. Anything else is counted, ignored."""
        try:
            payload = sp.decode_payload(message.payload)
            rebirth = any(
                pm.name == REBIRTH and pm.WhichOneof("value") == "boolean_value" and pm.boolean_value
                for pm in payload.metrics
            )
        except Exception as exc:
            self.counters["bad_commands"] += 1
            self.log("warning", f"{message.topic}: {one_line_error(exc)}", self.name)
            return
        if not rebirth:
            self.counters["ignored_commands"] += 1
            return
        self.counters["rebirth_requests"] += 1
        self.log("info", f"{message.topic}: rebirth requested", self.name)
        with self.lock:
            if not self.session_born:  # waiting for the primary host: its STATE births us
                return
            try:
                self._births(client)
            except DeliveryError as exc:  # not connected any more: the next CONNACK births anyway
                self.log("warning", f"rebirth not sent: {exc}", self.name)

    def _on_unsubscribe(self, _client: Any, _userdata: Any, mid: int, _codes: Any, _props: Any) -> None:
        link = self.link
        if link is None:  # closed meanwhile: nobody waits
            return
        with link.cond:
            self._acked.add(mid)
            link.cond.notify_all()

    def close(self) -> None:
        """NDEATH (QoS 1, acknowledged), then DISCONNECT. Never raises."""
        link, self.link = self.link, None
        if link is None:
            return
        try:
            with self.lock:
                if link.connected and self.birth_bd_seq is not None:
                    info = link.client.publish(
                        self.topic("NDEATH"), sp.death_payload(self.birth_bd_seq, _now_ms()), qos=1
                    )
                    if not info.rc:
                        info.wait_for_publish(min(5.0, self.config.ack_timeout))
        except Exception as exc:
            self.log("warning", f"NDEATH not sent: {one_line_error(exc)}", self.name)
        try:
            link.stop()
        except Exception as exc:
            self.log("warning", f"disconnect: {one_line_error(exc)}", self.name)
        self.born.clear()

    # ---- publishing (self.lock held) ----------------------------------------------------------

    def _publish(self, client: Any, topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, qos=0, retain=False)
        if info.rc:
            where = self.link.where if self.link else "mqtt"
            raise DeliveryError(
                f"{where}: publish to {topic} failed: not connected ({info.rc})", retryable=True
            )
        self.counters["messages"] += 1
        self.seq = (self.seq + 1) % 256

    def _birth_rows(self, device: str | None) -> list[sp.MetricRow]:
        rows: list[sp.MetricRow] = []
        for name, (alias, datatype) in self.catalog.get(device, {}).items():
            value, ts, quality = self.last.get((device, name), (None, None, None))
            rows.append((name, alias, datatype, value, ts, quality, None))
        return rows

    def _births(self, client: Any) -> None:
        """NBIRTH (seq 0) and every DBIRTH: everything this node will publish, current values."""
        now = _now_ms()
        self.seq = 0
        node: list[sp.MetricRow] = [
            ("bdSeq", None, sp.INT64, self.birth_bd_seq, now, None, None),
            (REBIRTH, None, sp.BOOLEAN, False, now, None, None),
            *self._birth_rows(NODE),
        ]
        self.born = set()
        self._publish(client, self.topic("NBIRTH"), sp.encode_metric_rows(node, timestamp=now, seq=self.seq))
        self.born.add(NODE)
        self.counters["births"] += 1
        for device in self.catalog:
            if device is not NODE:
                self._dbirth(client, device, now)
        self.session_born = True
        link = self.link
        if link is not None:
            with link.cond:
                link.cond.notify_all()

    def _dbirth(self, client: Any, device: str, now: int) -> None:
        payload = sp.encode_metric_rows(self._birth_rows(device), timestamp=now, seq=self.seq)
        self._publish(client, self.topic("DBIRTH", device), payload)
        self.born.add(device)
        self.counters["device_births"] += 1

    # ---- delivery ------------------------------------------------------------------------------

    def _columns(self, table: pa.Table) -> dict[str, list[Any]]:
        if "tag" not in table.column_names:
            table = self.wide_to_tags(table)
        names = table.column_names

        def ms(column: str) -> list[Any]:
            if column not in names:
                return [None] * table.num_rows
            col = table.column(column)
            if pa.types.is_date(col.type):
                col = col.cast(pa.timestamp("ms", tz="UTC"))
            if not pa.types.is_timestamp(col.type):
                raise DeliveryError(
                    f"{self.name}: column {column} is {col.type}, not a timestamp", retryable=False
                )
            return pc.divide(col.cast(pa.timestamp("us", tz=col.type.tz)).cast(pa.int64()), 1000).to_pylist()

        def typed(column: str, kind: pa.DataType) -> list[Any]:
            if column not in names:
                return [None] * table.num_rows
            try:
                return table.column(column).cast(kind).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DeliveryError(
                    f"{self.name}: column {column} ({table.column(column).type}) is not {kind}: "
                    f"{one_line_error(exc)}",
                    retryable=False,
                ) from None

        def plain(column: str) -> list[Any]:
            return table.column(column).to_pylist() if column in names else [None] * table.num_rows

        return {
            "tag": typed("tag", pa.string()),
            "value": typed("value", pa.float64()),
            "value_text": typed("value_text", pa.string()),
            "quality": plain("quality"),
            "ts": ms("timestamp"),
            "received": ms("received_at"),
            "key": plain(KEY_COLUMN) if self.config.key_property else [None] * table.num_rows,
            "device": plain(self.config.device_column)
            if self.config.device_column
            else [None] * table.num_rows,
        }

    def wide_to_tags(self, table: pa.Table) -> pa.Table:
        """Records that are not tags: every column (but `timestamp`, `_key` and `device_column`)
        of every record is one metric named after the column; numbers and booleans are Double,
        the rest String. A record's key gets `/<column>` per metric."""
        import polars as pl

        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        ts = "timestamp" if "timestamp" in frame.columns and frame.schema["timestamp"].is_temporal() else None
        device = self.config.device_column
        keep = [c for c in (ts, device) if c is not None and c in frame.columns]
        parts = []
        for column, dtype in frame.schema.items():
            if column in (ts, device, KEY_COLUMN):
                continue
            numeric = dtype.is_numeric() or dtype == pl.Boolean
            parts.append(
                frame.select(
                    *keep,
                    tag=pl.lit(column),
                    value=pl.col(column).cast(pl.Float64) if numeric else pl.lit(None, pl.Float64),
                    value_text=pl.lit(None, pl.String)
                    if numeric
                    else pl.col(column).cast(pl.String, strict=False),
                    _key=pl.col(KEY_COLUMN) + f"/{column}"
                    if KEY_COLUMN in frame.columns
                    else pl.lit(None, pl.String),
                ).with_row_index("_row")
            )
        if not parts:
            raise DeliveryError(f"{self.name}: the records have no column to publish", retryable=False)
        tags = pl.concat(parts).sort("_row", maintain_order=True).drop("_row")  # record by record
        return tags.to_arrow()

    def _device_of(self, value: Any) -> str | None:
        if value is None or value == "":
            return self.config.device_id
        text = str(value)
        return text.replace("/", "_").replace("+", "_").replace("#", "_")

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        if table.num_rows == 0:
            return
        cols = self._columns(table)
        now = _now_ms()
        n = table.num_rows
        ts = [
            t if t is not None else (r if r is not None else now)
            for t, r in zip(cols["ts"], cols["received"], strict=True)
        ]
        # (value, kind): the first value of a new metric decides its datatype
        values = [
            (v, sp.DOUBLE) if v is not None else ((t, sp.STRING) if t is not None else (None, None))
            for v, t in zip(cols["value"], cols["value_text"], strict=True)
        ]
        quality = [None if q in (None, "good") else sp.QUALITY_CODES.get(q, 0) for q in cols["quality"]]
        by_device: dict[str | None, list[int]] = {}
        if self.config.device_column is None:  # one device (or the node): no per-row look-up
            by_device[self.config.device_id] = list(range(n))
        else:
            for i, d in enumerate(cols["device"]):
                by_device.setdefault(self._device_of(d), []).append(i)
        for rows in by_device.values():
            rows.sort(key=ts.__getitem__)  # chronological within a payload (stable per tag)
        if self.link is None:
            self.open()
        link = self.link
        assert link is not None
        generation = link.wait_connected(self.config.connect_timeout)
        self._wait_born(link, generation)
        client = link.client
        tags = cols["tag"]
        if None in tags:
            raise DeliveryError(f"{self.name}: a record without a tag name", retryable=False)
        with self.lock:
            if link.lost_since(generation):
                raise DeliveryError(f"{link.where}: connection lost ({link.last_error})", retryable=True)
            rebirth, new_devices, first = self._learn(by_device, tags, values)
            # A new metric is born with its first value of this table (its current value then), which
            # DDATA then leaves out: no value twice, and the host sees them in time order. A backlog
            # (historical) keeps every row in DDATA, for the is_historical flag.
            for i, device in first:
                self.last[(device, tags[i])] = (values[i][0], ts[i], quality[i])
            skip = set() if historical else {i for i, _ in first}
            if rebirth:
                self.counters["rebirths_new_metrics"] += 1
                self._births(client)
            else:
                for device in new_devices:
                    self._dbirth(client, device, now)
            encoded: list[tuple[str | None, list[sp.MetricRow]]] = []
            mismatch = 0
            keys = cols["key"]
            for device, rows in by_device.items():
                known = self.catalog[device]
                out: list[sp.MetricRow] = []
                for i in rows:
                    alias, datatype = known[tags[i]]
                    value, kind = values[i]
                    if kind is not None and kind != datatype:
                        mismatch += 1
                        value = repr(value) if datatype == sp.STRING else None
                    self.last[(device, tags[i])] = (value, ts[i], quality[i])
                    if i not in skip:
                        out.append((None, alias, None, value, ts[i], quality[i], keys[i]))
                if out:
                    encoded.append((device, out))
            self.counters["type_mismatch"] += mismatch
            step = self.config.max_metrics_per_message
            for device, out in encoded:
                topic = self.topic("NDATA" if device is NODE else "DDATA", device)
                for k in range(0, len(out), step):
                    if link.lost_since(generation):
                        raise DeliveryError(
                            f"{link.where}: connection lost ({link.last_error})", retryable=True
                        )
                    payload = sp.encode_metric_rows(
                        out[k : k + step], timestamp=_now_ms(), seq=self.seq, historical=historical
                    )
                    self._publish(client, topic, payload)
            rc, mid = client.unsubscribe(self.barrier_topic)
            if rc:
                raise DeliveryError(f"{link.where}: not connected ({rc})", retryable=True)
        self._wait_acked(link, generation, mid, n)
        self.counters["metrics"] += n

    def _learn(
        self, by_device: dict[str | None, list[int]], tags: list[Any], values: list[tuple[Any, int | None]]
    ) -> tuple[bool, list[str], list[tuple[int, str | None]]]:
        """Aliases and datatypes for the metrics first seen now: (full rebirth needed, new devices,
        the first row of each new metric with its device)."""
        rebirth, new_devices, first = False, [], []
        for device, rows in by_device.items():
            known = self.catalog.get(device)
            if known is None:
                known = self.catalog[device] = {}
                new_devices.append(device)
            added = False
            for i in rows:
                tag = tags[i]
                if tag not in known:
                    known[tag] = (self.next_alias, values[i][1] or sp.DOUBLE)
                    self.next_alias += 1
                    first.append((i, device))
                    added = True
            if added and device in self.born:
                rebirth = True  # a metric not in the births may not be published by alias
        return rebirth, [d for d in new_devices if d is not NODE], first

    def _wait_born(self, link: BrokerLink, generation: int) -> None:
        """With a primary host: its STATE online and our births out, else a retryable error (the
        outbox keeps the data)."""
        deadline = time.monotonic() + self.config.connect_timeout
        with link.cond:
            while not self.session_born:
                left = deadline - time.monotonic()
                if link.lost_since(generation) or left <= 0:
                    seen = {None: "no STATE seen", False: "its STATE is offline"}.get(self.host_online, "")
                    raise DeliveryError(
                        f"{link.where}: primary host {self.config.primary_host_id} is not online "
                        f"({seen or link.last_error}); not born",
                        retryable=True,
                    )
                link.cond.wait(left)

    def _wait_acked(self, link: BrokerLink, generation: int, mid: int, n: int) -> None:
        deadline = time.monotonic() + self.config.ack_timeout
        with link.cond:
            while mid not in self._acked:
                if link.lost_since(generation):
                    raise DeliveryError(
                        f"{link.where}: connection lost before the broker took {n} metrics ({link.last_error})",
                        retryable=True,
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeliveryError(
                        f"{link.where}: the broker did not acknowledge {n} metrics within "
                        f"{self.config.ack_timeout:g} s",
                        retryable=True,
                    )
                link.cond.wait(left)
            self._acked.discard(mid)
