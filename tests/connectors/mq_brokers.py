"""The real brokers on 127.0.0.1 for the message queue tests: a queue/stream/subject of a test's
own on each, a way to publish raw bodies to it, and the connector config that reads it.

Kinds: `rabbitmq` (a durable queue), `redis_streams` (a stream and consumer group), `nats_js`
(a JetStream stream and durable consumer), `nats_core` (a core subject: no acks, no replay).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import require_service

ACKING = ("rabbitmq", "redis_streams", "nats_js")
# JetStream re-delivers a message not acked within this long. Each message is acked after the
# micro-batch holding it commits; at 2 s a loaded CI machine's first commit after a restart (the
# historian's tables created) took longer and a re-delivered message came twice (since then the
# source keeps held messages in progress: test_nats_in_progress.py). Short enough that messages
# handed to a killed process come again within the tests' waits.
ACK_WAIT_S = 10.0
ALL = (*ACKING, "nats_core")
SERVICE = {"rabbitmq": "rabbitmq", "redis_streams": "redis", "nats_js": "nats", "nats_core": "nats"}
PORT = {"rabbitmq": 5672, "redis_streams": 6379, "nats_js": 4222, "nats_core": 4222}


def tag_bodies(n: int, start: int = 0) -> list[bytes]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        json.dumps(
            {
                "timestamp": (base + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                "tag": f"line{i % 3}.speed",
                "value": float(i),
            }
        ).encode()
        for i in range(start, start + n)
    ]


class Broker:
    def __init__(self, kind: str, existing: str | None = None):
        require_service(SERVICE[kind])
        self.kind = kind
        self.id = existing or f"mqtest_{uuid.uuid4().hex[:10]}"
        if kind == "nats_js" and existing is None:
            asyncio.run(self._nats_stream())

    # ---- the connector's side ------------------------------------------------------------------
    @property
    def connector_type(self) -> str:
        return {"rabbitmq": "rabbitmq", "redis_streams": "redis_streams"}.get(self.kind, "nats")

    def source_config(self, port: int | None = None, **extra: Any) -> dict[str, Any]:
        port = port or PORT[self.kind]
        fast = {"batch_interval_ms": 20, "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5}
        if self.kind == "rabbitmq":
            cfg = {"port": port, "queue": self.id, "prefetch": 500}
        elif self.kind == "redis_streams":
            cfg = {"port": port, "stream": self.id, "group": "g", "consumer": "c1", "start_id": "0"}
        elif self.kind == "nats_js":
            cfg = {
                "servers": [f"nats://127.0.0.1:{port}"],
                "subject": f"{self.id}.>",
                "jetstream": True,
                "durable": "d1",
                "ack_wait_s": ACK_WAIT_S,
            }
        else:
            cfg = {"servers": [f"nats://127.0.0.1:{port}"], "subject": f"{self.id}.>"}
        return {**fast, **cfg, **extra}

    def sink_config(self, **extra: Any) -> dict[str, Any]:
        if self.kind == "rabbitmq":
            return {"queue": self.id, "delivery": "direct", **extra}
        if self.kind == "redis_streams":
            return {"stream": self.id, "delivery": "direct", **extra}
        return {"subject": f"{self.id}.{{tag}}", "stream": self.id, "delivery": "direct", **extra}

    # ---- publishing raw bodies -----------------------------------------------------------------
    def publish(self, bodies: list[bytes]) -> None:
        if self.kind == "rabbitmq":
            import pika

            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
            ch = conn.channel()
            ch.queue_declare(self.id, durable=True)
            ch.confirm_delivery()
            for body in bodies:
                ch.basic_publish("", self.id, body)
            conn.close()
        elif self.kind == "redis_streams":
            import redis

            r = redis.Redis()
            pipe = r.pipeline(transaction=False)
            for body in bodies:
                pipe.xadd(self.id, {"data": body})
            pipe.execute()
            r.close()
        else:
            asyncio.run(self._nats_publish(bodies))

    def declare(self) -> None:
        """The queue exists before anything is published (RabbitMQ drops what no queue takes)."""
        if self.kind == "rabbitmq":
            self.publish([])

    async def _nats_stream(self) -> None:
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        await nc.jetstream().add_stream(name=self.id, subjects=[f"{self.id}.>"])
        await nc.close()

    async def _nats_publish(self, bodies: list[bytes]) -> None:
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        if self.kind == "nats_js":
            js = nc.jetstream()
            for body in bodies:
                await js.publish(f"{self.id}.data", body)
        else:
            for body in bodies:
                await nc.publish(f"{self.id}.data", body)
            await nc.flush()
        await nc.close()

    # ---- broker state ----------------------------------------------------------------------------
    def unacked(self) -> int | None:
        """Messages delivered and not acknowledged, where the broker tells (None: it does not)."""
        if self.kind == "redis_streams":
            import redis

            r = redis.Redis()
            try:
                return int(r.xpending(self.id, "g")["pending"])
            finally:
                r.close()
        if self.kind == "nats_js":
            return int(self._consumer_info().num_ack_pending)
        return None

    def redelivered(self) -> int:
        """JetStream: messages of the test's consumer delivered more than once."""
        return int(self._consumer_info().num_redelivered)

    def state(self) -> str:
        """What the broker holds now, one line for a failed assertion (JetStream: the stream's
        messages and the consumer's delivered, redelivered, pending and unacked counts)."""
        if self.kind != "nats_js":
            return f"{self.kind}: unacked {self.unacked()}"

        async def both(js: Any) -> Any:
            return await js.stream_info(self.id), await js.consumer_info(self.id, "d1")

        stream, consumer = self._jetstream(both)
        return (
            f"stream {stream.state.messages} messages (seq {stream.state.first_seq}-{stream.state.last_seq});"
            f" consumer delivered seq {consumer.delivered.stream_seq}, ack floor {consumer.ack_floor.stream_seq},"
            f" redelivered {consumer.num_redelivered}, ack pending {consumer.num_ack_pending},"
            f" pending {consumer.num_pending}"
        )

    def _consumer_info(self) -> Any:
        return self._jetstream(lambda js: js.consumer_info(self.id, "d1"))

    @staticmethod
    def _jetstream(call: Any) -> Any:
        """`await call(js)` on a connection of its own (closed after)."""

        async def run() -> Any:
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222")
            try:
                return await call(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(run())

    def cleanup(self) -> None:
        try:
            if self.kind == "rabbitmq":
                import pika

                conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
                conn.channel().queue_delete(self.id)
                conn.close()
            elif self.kind == "redis_streams":
                import redis

                redis.Redis().delete(self.id)
            elif self.kind == "nats_js":

                async def drop() -> None:
                    import nats

                    nc = await nats.connect("nats://127.0.0.1:4222")
                    await nc.jetstream().delete_stream(self.id)
                    await nc.close()

                asyncio.run(drop())
        except Exception:
            pass
