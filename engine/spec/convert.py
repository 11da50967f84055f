"""Linear form <-> graph form. Linear -> graph -> linear gives back the same pipeline."""

from __future__ import annotations

import re
from typing import Any

from engine.errors import SpecError, SpecIssue
from engine.spec.models import Endpoint, GraphPipeline, LinearPipeline, Node, parse_input

IMPLICIT_UNION = "union_sources"
# Linear-form keys that name another source; in graph form the node's extra inputs replace them.
SIDE_KEYS = {"join": "join_source", "lookup": "lookup_source", "union": "sources"}


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_\-]+", "_", name.strip()).strip("_") or "node"
    return slug if re.match(r"[A-Za-z_]", slug) else f"n_{slug}"


def side_refs(step: dict[str, Any]) -> list[str]:
    key = SIDE_KEYS.get(_canonical_type(step))
    value = step.get(key) if key else None
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _canonical_type(step: dict[str, Any]) -> str | None:
    from engine.transforms import registry

    type_name = step.get("type")
    return registry.canonical(type_name) if isinstance(type_name, str) else None


def linear_to_graph(linear: LinearPipeline) -> tuple[GraphPipeline, dict[str, str]]:
    """The graph, plus where each node came from in the linear document (for error paths)."""
    used: set[str] = set()
    origin: dict[str, str] = {}

    def new_id(base: str) -> str:
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        return candidate

    def endpoint(kind: str, i: int, end: Endpoint, inputs: list[str]) -> Node:
        node_id = new_id(_slug(end.name))
        origin[node_id] = f"{kind}s[{i}]"
        name = None if node_id == end.name else end.name  # the id stands for the name when they agree
        return Node(
            id=node_id,
            kind=kind,
            name=name,
            inputs=inputs,
            connector_type=end.connector_type,
            config=end.config,
            worker_process=end.worker_process,
        )

    nodes = [endpoint("source", i, src, []) for i, src in enumerate(linear.sources)]
    by_source_name = {src.name: node.id for src, node in zip(linear.sources, nodes, strict=True)}

    primary = nodes[0].id
    named = {ref for step in linear.transformations for ref in side_refs(step)}
    unnamed = [nodes[i].id for i, s in enumerate(linear.sources) if i > 0 and s.name not in named]
    current = primary
    if unnamed:
        current = new_id(IMPLICIT_UNION)
        origin[current] = "sources"
        nodes.append(
            Node(id=current, kind="transform", inputs=[primary, *unnamed], transform={"type": "union"})
        )

    for i, step in enumerate(linear.transformations):
        node_id = new_id(f"{_slug(str(step.get('type', 'step')))}_{i + 1}")
        origin[node_id] = f"transformations[{i}]"
        step = dict(step)
        inputs = [current]
        key = SIDE_KEYS.get(_canonical_type(step) or "")
        if key and key in step:
            refs = side_refs(step)
            step.pop(key)
            inputs += [by_source_name.get(ref, ref) for ref in refs]
        nodes.append(Node(id=node_id, kind="transform", inputs=inputs, transform=step))
        current = node_id

    nodes += [endpoint("destination", i, dst, [current]) for i, dst in enumerate(linear.destinations)]

    graph = GraphPipeline(
        name=linear.name,
        description=linear.description,
        nodes=nodes,
        schedule=linear.schedule,
        error_handling=linear.error_handling,
    )
    return graph, origin


def graph_to_linear(graph: GraphPipeline) -> LinearPipeline:
    """Only for graphs that are one chain with side sources; anything else is a SpecError."""

    def fail(message: str) -> SpecError:
        return SpecError([SpecIssue("nodes", f"cannot be written in linear form: {message}")])

    by_id = {n.id: n for n in graph.nodes}
    sources = [n for n in graph.nodes if n.kind == "source"]
    transforms = [n for n in graph.nodes if n.kind == "transform"]
    destinations = [n for n in graph.nodes if n.kind == "destination"]
    for n in graph.nodes:
        for ref in n.inputs:
            if parse_input(ref)[1] != "out":
                raise fail(f"node '{n.id}' reads port '{ref}'")

    consumers: dict[str, list[Node]] = {}
    for n in transforms:
        consumers.setdefault(n.inputs[0] if n.inputs else "", []).append(n)

    chain: list[Node] = []
    start = next((s for s in sources if s.id in consumers), sources[0] if sources else None)
    if start is None:
        raise fail("no source")
    current = start.id
    while current in consumers:
        nexts = consumers.pop(current)
        if len(nexts) > 1:
            raise fail(f"node '{current}' feeds several transformations")
        node = nexts[0]
        # The union of unnamed sources is implied by the linear form: not a step of its own.
        if not (node.id == IMPLICIT_UNION and node.transform == {"type": "union"} and not chain):
            chain.append(node)
        current = node.id
    if consumers:
        raise fail(f"transformation '{next(iter(consumers.values()))[0].id}' is not on the main chain")
    for d in destinations:
        if d.inputs != [current]:
            raise fail(f"destination '{d.id}' does not take the last step")

    steps = []
    for node in chain:
        step = dict(node.transform or {})
        extra = [by_id[parse_input(r)[0]].label for r in node.inputs[1:]]
        key = SIDE_KEYS.get(_canonical_type(step) or "")
        if extra:
            if key is None:
                raise fail(f"node '{node.id}' has several inputs")
            step[key] = extra if key == "sources" else extra[0]
        steps.append(step)
    ordered = [start, *[s for s in sources if s is not start]]
    return LinearPipeline(
        name=graph.name,
        description=graph.description,
        sources=[
            Endpoint(
                name=s.label,
                connector_type=s.connector_type or "",
                config=s.config or {},
                worker_process=s.worker_process,
            )
            for s in ordered
        ],
        transformations=steps,
        destinations=[
            Endpoint(
                name=d.label,
                connector_type=d.connector_type or "",
                config=d.config or {},
                worker_process=d.worker_process,
            )
            for d in destinations
        ],
        schedule=graph.schedule,
        error_handling=graph.error_handling,
    )
