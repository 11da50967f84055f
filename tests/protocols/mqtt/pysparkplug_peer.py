"""pysparkplug as a third-party Sparkplug B peer, run by the tests as a subprocess with
PYTHONPATH=<venv>/peers/pysparkplug (see tests/peers.py): it brings its own paho-mqtt 1.x, so it
never shares an interpreter with the project (paho-mqtt 2). Nothing of the project is imported.

    python pysparkplug_peer.py edge HOST PORT GROUP EDGE ROUNDS
        A pysparkplug EdgeNode with a device: NBIRTH, DBIRTH, then ROUNDS rounds of NDATA and
        DDATA; each message is reported on stdout. Then it reads one command from stdin:
        `disconnect` (pysparkplug's clean stop, with its NDEATH) or `crash` (the process dies
        without a DISCONNECT: the broker publishes the NDEATH will).
    python pysparkplug_peer.py listen HOST PORT TOPIC
        Subscribes to TOPIC and decodes every message with pysparkplug's payload classes (data
        aliases resolved through the births, as pysparkplug's client does) until stdin closes.

Both write one JSON object per line to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid

import paho.mqtt.client as paho  # the peer's paho-mqtt 1.x
import pysparkplug as psp


def say(**fields) -> None:
    print(json.dumps(fields, default=str), flush=True)


def _value(value):
    return value.hex() if isinstance(value, bytes) else value


def _metric(m) -> dict:
    return {
        "name": m.name,
        "alias": m.alias,
        "datatype": m.datatype.name,
        "value": _value(m.value),
        "timestamp": m.timestamp,
        "is_null": m.is_null,
    }


NODE = [("Uptime", psp.DataType.INT64, lambda i: 1000 + i), ("Temp", psp.DataType.DOUBLE, lambda i: 20.5 + i)]
NODE += [
    ("Running", psp.DataType.BOOLEAN, lambda i: i % 2 == 0),
    ("Mode", psp.DataType.STRING, lambda i: f"mode-{i}"),
]
DEVICE = [
    ("Flow", psp.DataType.FLOAT, lambda i: 1.5 * (i + 1)),
    ("Level", psp.DataType.INT16, lambda i: -5 - i),
]
DEVICE += [("Count", psp.DataType.UINT64, lambda i: 2**40 + i)]


def metrics(spec, i: int, ts: int, aliases: int) -> list:
    return [
        psp.Metric(timestamp=ts, name=name, datatype=dt, value=fn(i), alias=aliases + k)
        for k, (name, dt, fn) in enumerate(spec)
    ]


def edge(host: str, port: int, group: str, edge_id: str, rounds: int) -> None:
    client = psp.Client(client_id=f"pysparkplug-{uuid.uuid4().hex[:8]}")
    born = psp.get_current_timestamp()
    node = psp.EdgeNode(group, edge_id, metrics(NODE, -1, born, 1), client=client)
    node.register(psp.Device("Pump1", metrics(DEVICE, -1, born, 101)))
    # pysparkplug publishes its births from paho's thread on CONNACK and says "connected" before
    # they are out; publishing data meanwhile from another thread garbles the stream (paho 1.x),
    # so wait for our own DBIRTH to come back from the broker.
    echoed = threading.Event()
    dbirth = psp.Topic(
        message_type=psp.MessageType.DBIRTH, group_id=group, edge_node_id=edge_id, device_id="Pump1"
    )
    node.subscribe(dbirth, psp.QoS.AT_MOST_ONCE, lambda _node, _message: echoed.set())
    node.connect(host, port=port)
    if not echoed.wait(10):
        say(event="error", detail="our DBIRTH did not come back within 10 s")
        sys.exit(1)
    say(event="born", timestamp=born, node=[n for n, *_ in NODE], device=[n for n, *_ in DEVICE])
    for i in range(rounds):
        ts = born + 1000 * (i + 1)  # one second apart: each round's records are told apart by time
        node.update(metrics(NODE, i, ts, 1))
        node.update_device("Pump1", metrics(DEVICE, i, ts, 101))
        say(
            event="sent",
            round=i,
            timestamp=ts,
            node={name: fn(i) for name, _, fn in NODE},
            device={name: fn(i) for name, _, fn in DEVICE},
        )
    command = sys.stdin.readline().strip()
    if command == "crash":
        os._exit(0)  # no DISCONNECT: the broker publishes the will
    node.disconnect()
    say(event="disconnected")


def listen(host: str, port: int, topic: str) -> None:
    births: dict = {}
    client = paho.Client(client_id=f"pysparkplug-listen-{uuid.uuid4().hex[:8]}")
    subscribed = threading.Event()

    def on_message(_client, _userdata, message) -> None:
        try:
            t = psp.Topic.from_str(message.topic)
            key = (t.group_id, t.edge_node_id, t.device_id)
            decoded = psp.Message.from_mqtt_message(message, birth=births.get(key))
        except Exception as exc:  # report it: the test decides what it means
            say(topic=message.topic, error=f"{type(exc).__name__}: {exc}", hex=message.payload.hex())
            return
        payload = decoded.payload
        if isinstance(payload, (psp.NBirth, psp.DBirth)):
            births[key] = payload
        if isinstance(payload, psp.NDeath):
            say(
                topic=message.topic,
                type="NDEATH",
                raw_seq=_raw_seq(message.payload),
                bdSeq=payload.bd_seq_metric.value,
            )
            return
        say(
            topic=message.topic,
            type=t.message_type.name if hasattr(t.message_type, "name") else str(t.message_type),
            timestamp=getattr(payload, "timestamp", None),
            seq=getattr(payload, "seq", None),
            metrics=[_metric(m) for m in getattr(payload, "metrics", ())],
        )

    client.on_message = on_message
    client.on_subscribe = lambda *_: (subscribed.set(), say(event="subscribed"))
    client.connect(host, port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    sys.stdin.read()  # until the test closes stdin
    client.disconnect()
    client.loop_stop()


def _raw_seq(raw: bytes):
    """The NDEATH's seq field, if any (pysparkplug's NDeath has no place for one)."""
    from pysparkplug._protobuf import Payload

    payload = Payload.FromString(raw)
    return payload.seq if payload.HasField("seq") else None


if __name__ == "__main__":
    mode, host, port, *rest = sys.argv[1:]
    if mode == "edge":
        edge(host, int(port), rest[0], rest[1], int(rest[2]))
    else:
        listen(host, int(port), rest[0])
