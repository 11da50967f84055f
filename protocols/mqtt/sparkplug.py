"""Sparkplug B: payload encoding/decoding and the per-edge-node birth state.

Topic namespace: `spBv1.0/<group>/<message type>/<edge node>[/<device>]`.
- NBIRTH / DBIRTH announce every metric of a node / device with its name, alias and datatype; the
  session keeps them, so that NDATA / DDATA, which usually carry aliases only, get their names.
- NDEATH / DDEATH: the node / device is gone. Every metric born on it gets a gap record (quality
  `bad`, reason `comm_lost`) and its births are forgotten until the next birth. An NDEATH whose
  bdSeq is not the one of the node's NBIRTH is stale (the will of an older connection) and ignored.
- `seq` runs 0..255 from each NBIRTH over the node's messages; a jump is a sequence gap: gap
  records (reason `sequence_gap`) for the node's metrics, and a rebirth request (`rebirths`).
- Timestamps: the metric's, else the payload's, in ms; none or 0 is a null timestamp, one outside
  1990..now+1 day keeps the value as `uncertain` with a null timestamp (`protocols/timestamps.py`).
- Tag names: `group/edge/metric` for node metrics, `group/edge/device/metric` for device metrics.

Values: integers, floats and booleans go to `value`; String, Text, UUID to `value_text`; DateTime
(ms since the epoch) to `value_text` as ISO 8601; Bytes/File as hex; DataSet as JSON text;
Template members are flattened into `metric/member` tags. `is_null` gives a null value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.tags import TagBatchBuilder
from protocols.mqtt.sparkplug_proto import payload_class
from protocols.timestamps import PLAUSIBLE_AHEAD_US, PLAUSIBLE_FROM_US, implausible

NAMESPACE = "spBv1.0"
MESSAGE_TYPES = frozenset({"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD", "STATE"})

# Sparkplug B DataType enum (spec 3.0, section 6.4.16).
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
DATASET, BYTES, FILE, TEMPLATE = 16, 17, 18, 19
DATATYPE_NAMES = {
    INT8: "Int8", INT16: "Int16", INT32: "Int32", INT64: "Int64",
    UINT8: "UInt8", UINT16: "UInt16", UINT32: "UInt32", UINT64: "UInt64",
    FLOAT: "Float", DOUBLE: "Double", BOOLEAN: "Boolean", STRING: "String",
    DATETIME: "DateTime", TEXT: "Text", UUID: "UUID", DATASET: "DataSet",
    BYTES: "Bytes", FILE: "File", TEMPLATE: "Template",
}  # fmt: skip
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SparkplugError(ValueError):
    """A payload or topic that is not Sparkplug B."""


@dataclass
class Metric:
    """One metric, as a test, a simulator or the decoder sees it."""

    name: str | None
    value: Any = None
    datatype: int = DOUBLE
    alias: int | None = None
    timestamp: int | None = None  # ms since the epoch
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False


@dataclass(frozen=True)
class Topic:
    group: str
    message_type: str
    edge_node: str
    device: str | None = None

    @property
    def prefix(self) -> str:
        parts = [self.group, self.edge_node] + ([self.device] if self.device else [])
        return "/".join(parts)

    def __str__(self) -> str:
        tail = f"/{self.device}" if self.device else ""
        return f"{NAMESPACE}/{self.group}/{self.message_type}/{self.edge_node}{tail}"


def parse_topic(topic: str) -> Topic | None:
    """A Sparkplug B topic, or None for STATE and other non-edge topics; SparkplugError if malformed."""
    parts = topic.split("/")
    if len(parts) < 2 or parts[0] != NAMESPACE:
        raise SparkplugError(f"'{topic}' is not in the {NAMESPACE} namespace")
    if parts[1] == "STATE" or (len(parts) >= 3 and parts[2] == "STATE"):
        return None
    if len(parts) not in (4, 5) or parts[2] not in MESSAGE_TYPES:
        raise SparkplugError(
            f"'{topic}': expected {NAMESPACE}/<group>/<NBIRTH|NDATA|NDEATH|DBIRTH|DDATA|DDEATH>/<edge>[/<device>]"
        )
    return Topic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


# ---- encoding ------------------------------------------------------------------------------------


def _signed_to_wire(value: int, datatype: int) -> int:
    bits = 64 if datatype in (INT64, UINT64) else 32
    return value & ((1 << bits) - 1)


def encode_payload(
    metrics: Iterable[Metric], *, timestamp: int | None = None, seq: int | None = None
) -> bytes:
    """Serialise a Sparkplug B payload (timestamps in ms since the epoch)."""
    payload = payload_class()()
    if timestamp is not None:
        payload.timestamp = timestamp
    if seq is not None:
        payload.seq = seq
    for m in metrics:
        pm = payload.metrics.add()
        if m.name is not None:
            pm.name = m.name
        if m.alias is not None:
            pm.alias = m.alias
        if m.timestamp is not None:
            pm.timestamp = m.timestamp
        pm.datatype = m.datatype
        if m.is_historical:
            pm.is_historical = True
        if m.is_transient:
            pm.is_transient = True
        if m.is_null or m.value is None:
            pm.is_null = True
            continue
        _set_value(pm, m.datatype, m.value)
    return payload.SerializeToString()


def _set_value(pm: Any, datatype: int, value: Any) -> None:
    if datatype in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
        pm.int_value = _signed_to_wire(int(value), datatype)
    elif datatype in (INT64, UINT64):
        pm.long_value = _signed_to_wire(int(value), datatype)
    elif datatype == DATETIME:
        pm.long_value = int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)
    elif datatype == FLOAT:
        pm.float_value = float(value)
    elif datatype == DOUBLE:
        pm.double_value = float(value)
    elif datatype == BOOLEAN:
        pm.boolean_value = bool(value)
    elif datatype in (STRING, TEXT, UUID):
        pm.string_value = str(value)
    elif datatype in (BYTES, FILE):
        pm.bytes_value = bytes(value)
    else:
        raise SparkplugError(f"cannot encode datatype {DATATYPE_NAMES.get(datatype, datatype)}")


# ---- decoding ------------------------------------------------------------------------------------


def decode_payload(data: bytes) -> Any:
    try:
        return payload_class().FromString(data)
    except Exception as exc:  # protobuf raises DecodeError, and struct errors on truncated floats
        raise SparkplugError(f"not a Sparkplug B payload ({type(exc).__name__}: {exc})") from None


def metric_value(pm: Any, datatype: int) -> Any:
    """The Python value of a decoded metric (None for is_null or no value)."""
    if pm.is_null:
        return None
    kind = pm.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(pm, kind)
    if datatype in _SIGNED_BITS and kind in ("int_value", "long_value"):
        # Two's complement, whether the sender masked to the type's width or to the wire's.
        bits = _SIGNED_BITS[datatype]
        raw &= (1 << bits) - 1
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    if datatype == DATETIME and kind == "long_value":
        try:
            return (_EPOCH + timedelta(milliseconds=raw)).isoformat()
        except OverflowError:
            raise SparkplugError(f"DateTime value {raw} ms is past year 9999") from None
    if kind == "dataset_value":
        return _dataset_json(raw)
    return raw


def _dataset_json(ds: Any) -> str:
    rows = [
        [getattr(e, e.WhichOneof("value")) if e.WhichOneof("value") else None for e in r.elements]
        for r in ds.rows
    ]
    return json.dumps({"columns": list(ds.columns), "rows": rows}, default=str)


def _ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


_FROM_MS = PLAUSIBLE_FROM_US // 1000
_AHEAD_MS = PLAUSIBLE_AHEAD_US // 1000
SEQUENCE_GAP = "sequence_gap"
REBIRTH_METRIC = "Node Control/Rebirth"
REBIRTH_HOLDOFF_S = 5.0  # at most one rebirth request per node this often until its NBIRTH comes


def stamp(ms: int | None, now: datetime, what: str) -> tuple[datetime | None, str | None]:
    """(timestamp, problem) of a Sparkplug timestamp in ms: None and 0 mean "no timestamp" (null,
    never 1970); outside 1990-01-01..now+1 day it is implausible: no timestamp, and the reason."""
    if not ms:
        return None, None
    if not _FROM_MS <= ms <= (now - _EPOCH) // timedelta(milliseconds=1) + _AHEAD_MS:
        return None, implausible(f"{what} {ms} ms")
    return _ms(ms), None


def bd_seq_of(payload: Any) -> int | None:
    for pm in payload.metrics:
        if pm.name == "bdSeq" and pm.WhichOneof("value") in ("int_value", "long_value"):
            return int(getattr(pm, pm.WhichOneof("value")))
    return None


@dataclass
class _Births:
    """What one edge node or device announced: alias -> (name, datatype), and every name."""

    aliases: dict[int, tuple[str, int]] = field(default_factory=dict)
    datatypes: dict[str, int] = field(default_factory=dict)


@dataclass
class _Node:
    """An edge node's session: the bdSeq of its NBIRTH and the last sequence number seen."""

    bd_seq: int | None = None
    seq: int | None = None


def _add(
    builder: TagBatchBuilder,
    tag: str,
    value: Any,
    ts: datetime | None,
    received_at: datetime,
    quality: Any = "good",
    reason: str | None = None,
) -> None:
    """One record; `ts` None stays a null timestamp (the builder would put the receive time)."""
    builder.add(tag, value, timestamp=ts, quality=quality, reason=reason, received_at=received_at)
    if ts is None:
        builder.timestamp[-1] = None


class SparkplugSession:
    """Decodes Sparkplug B messages into tag records, keeping each node's and device's births.

    `handle(topic, payload, builder, received_at)` appends records to `builder` and raises
    SparkplugError for a payload it cannot read (the caller records it as a bad payload). A metric
    that cannot be decoded (or whose value is out of range) becomes one bad record and the other
    metrics of the message flow; each such problem is also put in `problems` as (item, reason),
    for the caller to count and log.

    Sparkplug B 3.0 host rules: an NDEATH whose bdSeq is not its NBIRTH's is stale and ignored
    (counted `stale_deaths`); a message whose `seq` is not the previous one's + 1 (mod 256) gives a
    gap record (reason `sequence_gap`) for every metric born on the node and asks for a rebirth,
    as does data from a node with no NBIRTH: the nodes to ask are in `rebirths`, which the caller
    drains and answers with an NCMD `Node Control/Rebirth` = true.
    Counters: `births`, `deaths`, `stale_deaths`, `sequence_gaps`, `unknown_alias`,
    `implausible_timestamps`, `bad_metrics`, `ignored` (STATE, commands), `filtered`.
    """

    def __init__(self, group_ids: Iterable[str] | None = None, edge_nodes: Iterable[str] | None = None):
        self.group_ids = set(group_ids) if group_ids else None
        self.edge_nodes = set(edge_nodes) if edge_nodes else None
        self.births: dict[tuple[str, str, str | None], _Births] = {}
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.counters: dict[str, int] = {}
        self.problems: list[tuple[str, str]] = []
        self.rebirths: list[tuple[str, str]] = []
        self._asked: dict[tuple[str, str], float] = {}  # node -> monotonic time of the last request

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _problem(self, counter: str, item: str, reason: str) -> None:
        self._count(counter)
        self.problems.append((item, reason))

    def _ask_rebirth(self, node: tuple[str, str]) -> None:
        now = time.monotonic()
        last = self._asked.get(node)
        if last is not None and now - last < REBIRTH_HOLDOFF_S:
            return
        self._asked[node] = now
        self.rebirths.append(node)

    def handle(self, topic: str, data: bytes, builder: TagBatchBuilder, received_at: datetime) -> None:
        t = parse_topic(topic)
        if t is None or t.message_type in ("NCMD", "DCMD"):
            self._count("ignored")
            return
        if (self.group_ids and t.group not in self.group_ids) or (
            self.edge_nodes and t.edge_node not in self.edge_nodes
        ):
            self._count("filtered")
            return
        key = (t.group, t.edge_node, t.device)
        node_key = (t.group, t.edge_node)
        payload = decode_payload(data)
        if t.message_type == "NDEATH":
            node = self.nodes.get(node_key)
            bd_seq = bd_seq_of(payload)
            if node is not None and None not in (node.bd_seq, bd_seq) and bd_seq != node.bd_seq:
                self._problem(
                    "stale_deaths",
                    topic,
                    f"stale NDEATH ignored: bdSeq {bd_seq}, but the node's NBIRTH had {node.bd_seq}",
                )
                return
            self._count("deaths")
            self.nodes.pop(node_key, None)
            self.death(t, builder, received_at)
            return
        when, problem = stamp(
            payload.timestamp if payload.HasField("timestamp") else None, received_at, "payload timestamp"
        )
        if t.message_type == "NBIRTH":
            self.nodes[node_key] = _Node(bd_seq_of(payload), payload.seq if payload.HasField("seq") else None)
            self._asked.pop(node_key, None)
        else:
            self._check_seq(t, topic, payload, builder, when or received_at)
        if t.message_type == "DDEATH":
            self._count("deaths")
            self.death(t, builder, received_at)
            return
        if t.message_type in ("NBIRTH", "DBIRTH"):
            self._count("births")
            if t.message_type == "NBIRTH":  # a node's rebirth invalidates its devices' births too
                for k in [k for k in self.births if k[:2] == key[:2]]:
                    del self.births[k]
            births = self.births[key] = _Births()
        else:
            births = self.births.get(key) or _Births()
        for pm in payload.metrics:
            try:
                self._metric(t, topic, pm, births, builder, when, problem, received_at)
            except Exception as exc:  # one metric we cannot read: a bad record, the others flow
                known = births.aliases.get(pm.alias) if pm.HasField("alias") else None
                name = pm.name if pm.HasField("name") else known[0] if known else f"alias_{pm.alias}"
                reason = f"bad_payload: metric {name}: {type(exc).__name__}: {exc}"[:300]
                _add(builder, f"{t.prefix}/{name}", None, None, received_at, "bad", reason)
                self._problem("bad_metrics", f"{topic} metric {name}", reason)

    def _check_seq(self, t: Topic, topic: str, payload: Any, builder: TagBatchBuilder, at: datetime) -> None:
        node_key = (t.group, t.edge_node)
        node = self.nodes.get(node_key)
        if node is None:  # data (or a device birth) from a node whose NBIRTH we never saw
            self._ask_rebirth(node_key)
            return
        if not payload.HasField("seq"):
            return
        seq, expected = payload.seq, None if node.seq is None else (node.seq + 1) % 256
        node.seq = seq
        if expected is None or seq == expected:
            return
        reason = f"{SEQUENCE_GAP}: seq {seq} after {(expected - 1) % 256}, expected {expected}"
        self._problem("sequence_gaps", topic, reason)
        # Just before the message that shows the loss: the values in between are unknown.
        builder.gap(sorted(self.known_tags(node_key)), reason=SEQUENCE_GAP, at=at - timedelta(microseconds=1))
        self._ask_rebirth(node_key)

    def _metric(
        self,
        t: Topic,
        topic: str,
        pm: Any,
        births: _Births,
        builder: TagBatchBuilder,
        default_ts: datetime | None,
        default_problem: str | None,
        received_at: datetime,
    ) -> None:
        name = pm.name if pm.HasField("name") else None
        datatype = pm.datatype if pm.HasField("datatype") else 0
        reason = None
        if name is None:
            known = births.aliases.get(pm.alias) if pm.HasField("alias") else None
            if known is None:
                self._count("unknown_alias")
                name, reason = f"alias_{pm.alias}", "unknown_alias"
                self._ask_rebirth((t.group, t.edge_node))
            else:
                name, datatype = known[0], datatype or known[1]
        datatype = datatype or births.datatypes.get(name, 0)
        if t.message_type in ("NBIRTH", "DBIRTH"):
            if pm.HasField("alias"):
                births.aliases[pm.alias] = (name, datatype)
            births.datatypes[name] = datatype
        if pm.HasField("timestamp"):
            ts, problem = stamp(pm.timestamp, received_at, f"metric {name} timestamp")
        else:
            ts, problem = default_ts, default_problem
        if problem is not None:
            self._problem("implausible_timestamps", f"{topic} metric {name}", problem)
            reason = problem if reason is None else f"{reason}; {problem}"
        prefix = f"{t.prefix}/{name}"
        if pm.WhichOneof("value") == "template_value" and not pm.is_null:
            self._template(topic, prefix, pm.template_value, builder, ts, received_at, problem)
            return
        _add(
            builder,
            prefix,
            metric_value(pm, datatype),
            ts,
            received_at,
            "uncertain" if reason else "good",
            reason,
        )

    def _template(
        self,
        topic: str,
        prefix: str,
        tpl: Any,
        builder: TagBatchBuilder,
        ts: datetime | None,
        now: datetime,
        ts_problem: str | None = None,
    ) -> None:
        for member in tpl.metrics:
            name = f"{prefix}/{member.name}"
            if member.WhichOneof("value") == "template_value":
                self._template(topic, name, member.template_value, builder, ts, now, ts_problem)
                continue
            if member.HasField("timestamp"):
                mts, problem = stamp(member.timestamp, now, f"member {name} timestamp")
                if problem is not None:
                    self._problem("implausible_timestamps", f"{topic} member {name}", problem)
            else:
                mts, problem = ts, ts_problem
            _add(
                builder,
                name,
                metric_value(member, member.datatype),
                mts,
                now,
                "uncertain" if problem else "good",
                problem,
            )

    def death(self, t: Topic, builder: TagBatchBuilder, at: datetime) -> None:
        """Gap records for every metric born on the node (and its devices) or the device."""
        if t.device is None:
            keys = [k for k in self.births if k[:2] == (t.group, t.edge_node)]
        else:
            keys = [k for k in self.births if k == (t.group, t.edge_node, t.device)]
        for key in keys:
            prefix = "/".join(p for p in key if p)
            builder.gap((f"{prefix}/{name}" for name in self.births.pop(key).datatypes), at=at)

    def known_tags(self, node: tuple[str, str] | None = None) -> list[str]:
        """Every metric born (on `node`'s births only, when given)."""
        return [
            "/".join(p for p in key if p) + f"/{name}"
            for key, births in self.births.items()
            if node is None or key[:2] == node
            for name in births.datatypes
        ]


def rebirth_request(group: str, edge_node: str) -> tuple[str, bytes]:
    """The host's NCMD asking an edge node to publish its births again (topic, payload)."""
    metric = Metric(REBIRTH_METRIC, True, BOOLEAN)
    return str(Topic(group, "NCMD", edge_node)), encode_payload([metric], timestamp=int(time.time() * 1000))


# ---- encoding for an edge node (protocols/mqtt/edge_node.py) -------------------------------------

QUALITY_PROPERTY = "Quality"  # the property Ignition and most hosts read: an OPC quality code
QUALITY_CODES = {"good": 192, "uncertain": 64, "bad": 0}
KEY_PROPERTY = "_key"  # optional: the record's idempotency key, when the destination asks for it

# One metric to encode: (name or None, alias or None, datatype or None, value (None: is_null),
# timestamp in ms or None, quality code or None (no property), idempotency key or None).
MetricRow = tuple[str | None, int | None, int | None, Any, int | None, int | None, str | None]


def encode_metric_rows(
    rows: Iterable[MetricRow], *, timestamp: int, seq: int | None, historical: bool = False
) -> bytes:
    """A payload from plain tuples, without a Metric object per value (the edge node's hot path).

    Data messages pass names and datatypes as None (aliases only, as the spec wants); births pass
    both. A quality other than None becomes the `Quality` property (Int32 OPC code: 192 good, 64
    uncertain, 0 bad), a key the `_key` property (String)."""
    payload = payload_class()()
    payload.timestamp = timestamp
    if seq is not None:
        payload.seq = seq
    add = payload.metrics.add
    for name, alias, datatype, value, ts, quality, key in rows:
        pm = add()
        if name is not None:
            pm.name = name
        if alias is not None:
            pm.alias = alias
        if ts is not None:
            pm.timestamp = ts
        if datatype is not None:
            pm.datatype = datatype
        if historical:
            pm.is_historical = True
        if quality is not None or key is not None:
            props = pm.properties
            if quality is not None:
                props.keys.append(QUALITY_PROPERTY)
                pv = props.values.add()
                pv.type = INT32
                pv.int_value = quality
            if key is not None:
                props.keys.append(KEY_PROPERTY)
                pv = props.values.add()
                pv.type = STRING
                pv.string_value = key
        if value is None:
            pm.is_null = True
        elif type(value) is float:
            pm.double_value = value
        elif type(value) is str:
            pm.string_value = value
        elif type(value) is bool:
            pm.boolean_value = value
        else:
            _set_value(pm, datatype or DOUBLE, value)
    return payload.SerializeToString()


def death_payload(bd_seq: int, timestamp: int | None = None) -> bytes:
    """An NDEATH: the bdSeq metric (Int64) only, and no seq (Sparkplug 3.0)."""
    return encode_payload([Metric("bdSeq", bd_seq, INT64)], timestamp=timestamp)
