"""What every upstream connector (`postgresql`, `nats`, `webhook`, `rabbitmq`, `redis_streams`,
`kafka`, `mqtt`/`sparkplug_b`) shares: its destination is built from its `Target` class and
written through `remote_sink` (the outbox, or direct), and "test connection" opens and closes
the target."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.connectors.base import Connector, Sink
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.outbox.target import DeliveryError


class RemoteConnector(Connector):
    """A connector whose destination is an upstream: `Target(config, ctx, name)` is its
    UpstreamTarget (engine/outbox/target.py), made from its `SinkConfig`."""

    Target: ClassVar[Any] = None

    @classmethod
    def make_target(cls, config: Any, ctx: RunContext, name: str) -> Any:
        if cls.SinkConfig is not None and not isinstance(config, cls.SinkConfig):
            config = cls.SinkConfig.model_validate(config)
        return cls.Target(config, ctx, name)

    @classmethod
    def make_sink(cls, config: Any, ctx: RunContext, name: str) -> Sink:
        from engine.outbox.sinks import remote_sink  # through the outbox, or direct

        return remote_sink(cls, config, ctx, name)


class CheckByOpening:
    """`check()` for a target whose `open()` reaches the upstream: open, then close; a
    DeliveryError becomes the one-line ConnectorError that "test connection" shows."""

    def check(self) -> None:
        try:
            self.open()  # type: ignore[attr-defined]  # the target's own
        except DeliveryError as exc:
            raise ConnectorError(str(exc)) from None
        finally:
            self.close()  # type: ignore[attr-defined]
