"""The compiled pipeline: parse -> check -> one typed `Plan`.

`engine.spec.validate.validate` is the only place a document is checked and its configs are
parsed: each connector config becomes its typed model once, with secrets unresolved (a
`{"secret": NAME}` value is held as `"<secret>"` and its place is remembered), and each
transformation its node instance. The batch executor, the preview and the streaming runner run
the Plan; none of them validates again. At run time `Plan.config(node, secret)` puts the secret
values into a copy of the typed config, at the places remembered: nothing is parsed twice.

`Compiled` is the Plan's former name, kept as an alias.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from engine.connectors import registry as connectors
from engine.connectors.base import Connector, ConnectorConfig
from engine.spec.models import GraphPipeline, LinearPipeline, parse_input
from engine.transforms.base import Transform

SECRET_MASK = "<secret>"  # what a secret reference is checked as (any text field takes it)

Path = tuple[str | int, ...]  # a place in a config: keys and list indexes


@dataclass(frozen=True)
class Capabilities:
    """What the Plan needs at run time, known from the document alone."""

    real_time: bool  # scheduled real_time: run by the streaming runner
    row_local: bool  # every transformation is row-local with one input (no blocking node)
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    stateful: tuple[str, ...]  # transformations that carry per-tag state across micro-batches
    worker_process: tuple[str, ...]  # sources run in a child process
    live_sources: tuple[str, ...]  # streaming sources: a preview takes a short live sample of them

    @property
    def needs_live_sample(self) -> bool:
        return bool(self.live_sources)


@dataclass(frozen=True)
class Plan:
    graph: GraphPipeline
    form: str  # "linear" | "graph"
    paths: dict[str, str]  # node id -> JSON path of that node in the document as written
    transforms: dict[str, Transform] = field(default_factory=dict)  # node id -> node instance
    configs: dict[str, ConnectorConfig] = field(default_factory=dict)  # typed, secrets unresolved
    order: list[str] = field(default_factory=list)  # topological: producers first
    linear: LinearPipeline | None = None
    secrets: Mapping[str, tuple[tuple[Path, str], ...]] = field(default_factory=dict)  # node -> (place, name)

    # ---- the graph -----------------------------------------------------------------------------
    def consumers(self) -> dict[str, list[tuple[str, str, int]]]:
        """producer id -> [(consumer id, producer port, consumer input index)]."""
        out: dict[str, list[tuple[str, str, int]]] = {}
        for node in self.graph.nodes:
            for idx, ref in enumerate(node.inputs):
                producer, port = parse_input(ref)
                out.setdefault(producer, []).append((node.id, port, idx))
        return out

    @cached_property
    def capabilities(self) -> Capabilities:
        nodes = {n.id: n for n in self.graph.nodes}
        return Capabilities(
            real_time=self.graph.schedule.type == "real_time",
            row_local=all(t.streaming and len(nodes[nid].inputs) == 1 for nid, t in self.transforms.items()),
            sources=tuple(nid for nid in self.order if nodes[nid].kind == "source"),
            destinations=tuple(nid for nid in self.order if nodes[nid].kind == "destination"),
            stateful=tuple(
                nid
                for nid, t in self.transforms.items()
                if getattr(t, "stream_state", lambda: None)() is not None
            ),
            worker_process=tuple(n.id for n in self.graph.nodes if n.kind == "source" and n.worker_process),
            live_sources=tuple(nid for nid in self.order if nodes[nid].kind == "source" and self._live(nid)),
        )

    @cached_property
    def version_text(self) -> tuple[str, str]:
        """The document as the pipeline's version history stores it (canonical JSON of the graph,
        engine.spec.models.dump) and its SHA-256: made once per Plan, not on every run."""
        from engine.spec.models import dump

        text = json.dumps(dump(self.graph), sort_keys=True, separators=(",", ":"))
        return text, hashlib.sha256(text.encode()).hexdigest()

    def _live(self, node_id: str) -> bool:
        """Is the node's source a streaming one? Told by the source object its connector makes from
        the checked config (nothing is opened: sources connect in read() or start())."""
        from engine.connectors.base import StreamingSource
        from engine.context import RunContext

        try:
            source = self.connector(node_id).make_source(self.configs[node_id], RunContext(), node_id)
        except Exception:  # cannot tell from here; the run finds out when it starts the source
            return False
        return isinstance(source, StreamingSource)

    def through(self, node_id: str) -> Plan:
        """The Plan cut down to `node_id` and what feeds it (a preview reads no more). KeyError
        for an unknown node."""
        keep, todo = set(), [node_id]
        while todo:
            nid = todo.pop()
            if nid in keep:
                continue
            keep.add(nid)
            todo += [parse_input(ref)[0] for ref in self.graph.node(nid).inputs]
        graph = self.graph.model_copy(update={"nodes": [n for n in self.graph.nodes if n.id in keep]})
        return Plan(
            graph,
            self.form,
            {k: v for k, v in self.paths.items() if k in keep},
            {k: v for k, v in self.transforms.items() if k in keep},
            {k: v for k, v in self.configs.items() if k in keep},
            [n for n in self.order if n in keep],
            self.linear,
            {k: v for k, v in self.secrets.items() if k in keep},
        )

    # ---- connectors at run time ----------------------------------------------------------------
    def connector(self, node_id: str) -> type[Connector]:
        cls = connectors.get(self.graph.node(node_id).connector_type or "")
        assert cls is not None, "validation names unknown connector types"
        return cls

    def config(self, node_id: str, secret: Callable[[str], str]) -> ConnectorConfig:
        """The node's typed config with its secrets' values in place (`secret(name)` gives one);
        the checked model itself when it has none. Not validated again: a secret's place was
        checked as text, and the value put there is text."""
        config = self.configs[node_id]
        for place, name in self.secrets.get(node_id, ()):
            config = _put(config, place, secret(name))
        return config


Compiled = Plan  # the former name (engine.api and tests import it)


def secret_places(value: Any, place: Path = ()) -> list[tuple[Path, str]]:
    """Where a raw config holds `{"secret": NAME}`: [(place, NAME)]."""
    if isinstance(value, dict):
        if set(value) == {"secret"} and isinstance(value["secret"], str):
            return [(place, value["secret"])]
        return [hit for k, v in value.items() for hit in secret_places(v, (*place, k))]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in secret_places(v, (*place, i))]
    return []


def mask_secrets(value: Any) -> Any:
    """The raw config with every secret reference as `SECRET_MASK` (checked as text)."""
    if isinstance(value, dict):
        if set(value) == {"secret"}:
            return SECRET_MASK
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def _put(obj: Any, place: Path, value: Any) -> Any:
    """A copy of `obj` (a model, dict or list, nested) with `value` at `place`; `obj` is unchanged."""
    if not place:
        return value
    key, rest = place[0], place[1:]
    if isinstance(obj, BaseModel):
        name = _field_name(type(obj), key)
        return obj.model_copy(update={name: _put(getattr(obj, name), rest, value)})
    if isinstance(obj, dict):
        return {**obj, key: _put(obj[key], rest, value)}
    if isinstance(obj, list | tuple):
        items = list(obj)
        items[key] = _put(items[key], rest, value)  # type: ignore[index]
        return type(obj)(items)
    raise TypeError(f"cannot put a secret at {place!r} in a {type(obj).__name__}")


def _field_name(model: type[BaseModel], key: Any) -> str:
    if key in model.model_fields:
        return key
    for name, info in model.model_fields.items():
        if key in (info.alias, info.validation_alias):
            return name
    raise KeyError(key)
