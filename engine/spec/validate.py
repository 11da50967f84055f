"""Validation of a pipeline document: every problem at once, each with its JSON path.

Compile once: parse -> check -> one typed `Plan` (engine/spec/plan.py: the graph, each node's
config model with secrets unresolved, node instances, topological order, capabilities). Each
config is parsed here once (a memo per call: the per-part checks and the graph build share the
models); the executor, the preview and the streaming runner run the Plan and validate nothing, so
validation and execution can never disagree about what a document means. Every issue names the
node it is about (`SpecIssue.node`) when it is about one.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from typing import Any

from pydantic import ValidationError

from engine.connectors import registry as connectors
from engine.connectors.base import ConnectorConfig
from engine.errors import AggregatorError, SpecError, SpecIssue
from engine.lazy import lazy_module
from engine.spec import issues as pyd
from engine.spec.convert import linear_to_graph, side_refs
from engine.spec.guard import check_values
from engine.spec.models import GraphPipeline, LinearPipeline, Node, parse_input
from engine.spec.plan import Compiled, Plan, mask_secrets, secret_places
from engine.transforms import registry as transforms
from engine.transforms.base import Transform, TransformConfig

pl = lazy_module("polars")

__all__ = ["Compiled", "Plan", "check_endpoint", "check_step", "form_of", "validate"]

Memo = dict[tuple[str, str], Any]  # (model class, canonical JSON of the raw dict) -> parsed model


def _parse(model: type, raw: dict[str, Any], memo: Memo | None) -> Any:
    """`model.model_validate(raw)`, once per (model, content) within one `validate()` call."""
    if memo is None:
        return model.model_validate(raw)
    key = (f"{model.__module__}.{model.__qualname__}", json.dumps(raw, sort_keys=True, default=repr))
    if key not in memo:
        memo[key] = model.model_validate(raw)
    return memo[key]


class _Build:
    """What the graph checks gather, frozen into the Plan at the end."""

    def __init__(self, graph: GraphPipeline, form: str, paths: dict[str, str], linear=None):
        self.graph, self.form, self.paths, self.linear = graph, form, paths, linear
        self.transforms: dict[str, Transform] = {}
        self.configs: dict[str, ConnectorConfig] = {}
        self.secrets: dict[str, tuple] = {}
        self.order: list[str] = []

    def plan(self) -> Plan:
        return Plan(
            self.graph,
            self.form,
            self.paths,
            self.transforms,
            self.configs,
            self.order,
            self.linear,
            self.secrets,
        )


def form_of(doc: dict[str, Any]) -> str:
    return "graph" if "nodes" in doc else "linear"


def validate(doc: Any, *, check_schemas: bool = True, ctx: Any = None, reuse: bool = False) -> Plan:
    """Validate a parsed document; raise SpecError listing every issue.

    `reuse`: the Plan of a document that checked out is kept (by the document's canonical JSON, up
    to `PLAN_CACHE_SIZE` documents) and given again for the same document: a scheduled pipeline
    that runs every second is parsed and its graph checked once, not on every run (the engine's
    runs ask for it). What depends on more than the document is checked on every call all the
    same: the sources' schemas against the transformations (`check_schemas`, with `ctx`), a
    real_time pipeline's streaming checks, and that each node's connector and transformation are
    still the classes the Plan was built with (a plugin can be replaced). A changed document is a
    different key: a spec file edited on disk is compiled again on its next run."""
    if not isinstance(doc, dict):
        raise SpecError([SpecIssue("", "a pipeline document is a JSON/YAML object")])
    limits = check_values(doc)  # nesting, lone surrogates, huge numbers: before anything walks it
    if limits:
        raise SpecError(limits)
    key: str | None = None
    if reuse:
        try:
            key = json.dumps(doc, sort_keys=True, default=repr)
        except (TypeError, ValueError):  # keys that do not sort (YAML's 1 beside "a"): not kept
            key = None
    plan = _cached_plan(key) if key is not None else None
    if plan is None:
        plan = _compile(doc)
        if key is not None:
            _keep_plan(key, plan)
    issues: list[SpecIssue] = _check_policy(plan, ctx)
    if issues:  # a refused file is never opened, not even to read its schema
        raise SpecError(_with_nodes(_dedupe(issues), plan.paths))
    if check_schemas:
        issues += _check_schemas(plan, ctx)
    if not issues and plan.graph.schedule.type == "real_time":
        from engine.streaming.checks import check_streaming  # streaming imports this module

        issues += check_streaming(plan, ctx)
    if issues:
        raise SpecError(_with_nodes(_dedupe(issues), plan.paths))
    return plan


def _check_policy(plan: Plan, ctx: Any) -> list[SpecIssue]:
    """Files only inside the allowed roots, plugins only when enabled (engine/spec/paths_policy.py):
    on every call, cached Plan or not, since an admin may change the settings at any time."""
    from engine.spec.paths_policy import check_plan

    return check_plan(plan, ctx)


PLAN_CACHE_SIZE = 256
_plans: OrderedDict[str, tuple[Plan, tuple[Any, ...]]] = OrderedDict()  # key -> (plan, its classes)
_plans_lock = threading.Lock()


def _classes(plan: Plan) -> tuple[Any, ...]:
    """The connector or transformation class of each node, as the registries give them now."""
    return tuple(
        transforms.get(n.transform["type"])
        if n.kind == "transform" and n.transform
        else connectors.get(n.connector_type or "")
        for n in plan.graph.nodes
    )


def _cached_plan(key: str) -> Plan | None:
    with _plans_lock:
        hit = _plans.get(key)
        if hit is not None:
            _plans.move_to_end(key)
    if hit is None:
        return None
    plan, classes = hit
    if _classes(plan) != classes:  # a plugin was replaced: compile again
        return None
    return plan


def _keep_plan(key: str, plan: Plan) -> None:
    classes = _classes(plan)
    with _plans_lock:
        _plans[key] = (plan, classes)
        _plans.move_to_end(key)
        while len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)


def _guide_forms(doc: dict[str, Any]) -> tuple[dict[str, Any], list[SpecIssue]]:
    """The document with a custom connector's node-level `implementation` (the user guide's form)
    moved into its config, where the connector reads it (engine/spec/models.py)."""
    from engine.spec.models import custom_implementation

    issues: list[SpecIssue] = []
    out = doc
    for key in ("sources", "destinations", "nodes", "source", "destination"):
        items = doc.get(key)
        single = isinstance(items, dict)
        listed = [items] if single else items
        if not isinstance(listed, list) or not any(
            isinstance(i, dict) and i.get("implementation") is not None for i in listed
        ):
            continue
        moved = []
        for index, item in enumerate(listed):
            try:
                moved.append(custom_implementation(item))
            except ValueError as exc:
                where = key if single else f"{key}[{index}]"
                issues.append(SpecIssue(f"{where}.implementation", str(exc)))
                moved.append({k: v for k, v in item.items() if k != "implementation"})
        out = {**out, key: moved[0] if single else moved}
    return out, issues


def _compile(doc: dict[str, Any]) -> Plan:
    """Parse and check the document alone (no schemas, no streaming checks): its Plan."""
    doc, issues = _guide_forms(doc)
    form = form_of(doc)
    model = GraphPipeline if form == "graph" else LinearPipeline
    if form == "graph" and any(k in doc for k in ("sources", "source", "transformations")):
        issues.append(
            SpecIssue("", "a document has either 'nodes' (graph form) or 'sources' (linear form), not both")
        )
    if form == "linear" and "sources" not in doc and "source" not in doc:
        issues.append(SpecIssue("", "missing 'nodes' (graph form) or 'sources' (linear form)"))

    memo: Memo = {}
    parsed = None
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        issues += [
            i
            for i in pyd.from_pydantic(exc, "", model)
            if not (i.path == "" and i.message.startswith("missing") and issues)
        ]

    issues += _check_parts(doc, form, memo)
    if issues or parsed is None:
        raise SpecError(_with_nodes(_dedupe(issues), _early_paths(doc, parsed)))

    if isinstance(parsed, LinearPipeline):
        graph, paths = linear_to_graph(parsed)
        build = _Build(graph, "linear", paths, linear=parsed)
    else:
        build = _Build(parsed, "graph", {n.id: f"nodes[{i}]" for i, n in enumerate(parsed.nodes)})
    issues += _check_graph(build, memo)
    if issues:
        raise SpecError(_with_nodes(_dedupe(issues), build.paths))
    return build.plan()


def _early_paths(doc: dict[str, Any], parsed: Any) -> dict[str, str]:
    """Node id -> JSON path before the graph is built (for the issues of the per-part checks)."""
    if isinstance(parsed, LinearPipeline):
        try:
            return linear_to_graph(parsed)[1]
        except Exception:  # a document too broken to convert: its issues name no node
            return {}
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        return {}
    return {
        n["id"]: f"nodes[{i}]"
        for i, n in enumerate(nodes)
        if isinstance(n, dict) and isinstance(n.get("id"), str)
    }


def _with_nodes(issues: list[SpecIssue], paths: dict[str, str]) -> list[SpecIssue]:
    """Each issue with the id of the node it is about (the node whose JSON path its path is in)."""
    by_path = sorted(((p, nid) for nid, p in paths.items()), key=lambda item: -len(item[0]))
    out = []
    for issue in issues:
        node = next(
            (nid for p, nid in by_path if issue.path == p or issue.path.startswith((p + ".", p + "["))),
            None,
        )
        out.append(dataclasses.replace(issue, node=node) if node and issue.node is None else issue)
    return out


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen, out = set(), []
    for i in issues:
        if (i.path, i.message) not in seen:
            seen.add((i.path, i.message))
            out.append(i)
    return out


# ---- per-part checks on the raw document (so one bad part does not hide the others) ---------
def _check_parts(doc: dict[str, Any], form: str, memo: Memo | None = None) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    if form == "graph":
        for i, node in enumerate(_list(doc.get("nodes"))):
            if not isinstance(node, dict):
                continue
            kind = node.get("kind")
            if kind == "transform":
                if node.get("transform") is not None:
                    issues += check_step(node["transform"], f"nodes[{i}].transform", memo)
                else:
                    issues.append(
                        SpecIssue(f"nodes[{i}].transform", "missing required field for a transform node")
                    )
            elif kind in ("source", "destination"):
                issues += check_endpoint(node, kind, f"nodes[{i}]", memo)
                if node.get("transform") is not None:
                    issues.append(SpecIssue(f"nodes[{i}].transform", f"a {kind} node has no 'transform'"))
        return issues
    sources = _list(doc.get("sources")) or ([doc["source"]] if isinstance(doc.get("source"), dict) else [])
    names = [s.get("name") for s in sources if isinstance(s, dict)]
    for i, src in enumerate(sources):
        if isinstance(src, dict):
            issues += check_endpoint(src, "source", f"sources[{i}]", memo)
    dests = _list(doc.get("destinations")) or (
        [doc["destination"]] if isinstance(doc.get("destination"), dict) else []
    )
    for i, dst in enumerate(dests):
        if isinstance(dst, dict):
            issues += check_endpoint(dst, "destination", f"destinations[{i}]", memo)
    for i, step in enumerate(_list(doc.get("transformations"))):
        issues += check_step(step, f"transformations[{i}]", memo)
        if isinstance(step, dict):
            key = next((k for k in ("join_source", "lookup_source", "sources") if k in step), None)
            refs = side_refs(step) if key else []
            if not all(isinstance(ref, str) for ref in refs):
                issues.append(SpecIssue(f"transformations[{i}].{key}", "a source is named by its text name"))
                refs = []
            for ref in refs:
                if ref not in names:
                    issues.append(
                        SpecIssue(
                            f"transformations[{i}].{key}",
                            f"unknown source '{ref}'",
                            ", ".join(str(n) for n in names),
                        )
                    )
                elif ref == names[0]:
                    issues.append(
                        SpecIssue(
                            f"transformations[{i}].{key}",
                            f"'{ref}' is the primary source; name another source",
                        )
                    )
            if transforms.canonical(str(step.get("type"))) == "join" and "join_source" not in step:
                issues.append(
                    SpecIssue(
                        f"transformations[{i}].join_source",
                        "missing required field (the source to join with)",
                        ", ".join(str(n) for n in names[1:]) or None,
                    )
                )
    return issues


def _list(value: Any) -> list[Any]:
    """A list the document model reports when it is anything else (`"nodes": 5`)."""
    return value if isinstance(value, list) else []


def check_step(step: Any, path: str, memo: Memo | None = None) -> list[SpecIssue]:
    if not isinstance(step, dict):
        return [SpecIssue(path, "a transformation is an object with a 'type'")]
    if "type" not in step:
        return [SpecIssue(f"{path}.type", "missing required field", _type_list())]
    type_name = step["type"]
    cls = transforms.canonical(type_name) if isinstance(type_name, str) else None
    if cls is None:
        return [SpecIssue(f"{path}.type", f"unknown transformation type '{type_name}'", _type_list())]
    config_cls = transforms.get(type_name).Config
    try:
        _parse(config_cls, step, memo)
    except ValidationError as exc:
        return pyd.from_pydantic(exc, path, config_cls)
    return []


def _type_list() -> str:
    return ", ".join(transforms.names())


def check_endpoint(raw: dict[str, Any], role: str, path: str, memo: Memo | None = None) -> list[SpecIssue]:
    ctype = raw.get("connector_type")
    if not isinstance(ctype, str):
        return [
            SpecIssue(f"{path}.connector_type", "missing required field", ", ".join(connectors.names(role)))
        ]
    cls = connectors.get(ctype)
    if cls is None:
        return [
            SpecIssue(
                f"{path}.connector_type",
                f"unknown connector type '{ctype}'",
                ", ".join(connectors.names(role)),
            )
        ]
    model = cls.SourceConfig if role == "source" else cls.SinkConfig
    if model is None:
        return [
            SpecIssue(
                f"{path}.connector_type",
                f"connector '{ctype}' cannot be a {role}",
                ", ".join(connectors.names(role)),
            )
        ]
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        return []  # reported by the document model
    try:
        _parse(model, mask_secrets(config), memo)
    except ValidationError as exc:
        return pyd.from_pydantic(exc, f"{path}.config", model)
    return []


def endpoint_config(node: Node, memo: Memo | None = None) -> ConnectorConfig:
    """The node's typed config, secrets unresolved (each `{"secret": NAME}` checked as text)."""
    cls = connectors.get(node.connector_type or "")
    model = cls.SourceConfig if node.kind == "source" else cls.SinkConfig
    return _parse(model, mask_secrets(node.config or {}), memo)


def transform_config(step: dict[str, Any], memo: Memo | None = None) -> TransformConfig:
    return _parse(transforms.get(step["type"]).Config, step, memo)


# ---- graph structure -------------------------------------------------------------------------
def _check_graph(c: _Build, memo: Memo | None = None) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    nodes = c.graph.nodes
    ids = [n.id for n in nodes]
    by_id: dict[str, Node] = {}
    for n in nodes:
        if n.id in by_id:
            issues.append(SpecIssue(f"{c.paths[n.id]}.id", f"duplicate node id '{n.id}'"))
        by_id[n.id] = n

    for n in nodes:
        base = c.paths.get(n.id, "")
        in_path = f"{base}.inputs" if c.form == "graph" else base
        if n.worker_process and n.kind != "source":
            issues.append(SpecIssue(f"{base}.worker_process", "only a source runs in a worker process"))
        if n.kind == "transform":
            step = n.transform or {}
            cls = transforms.get(step["type"])
            c.transforms[n.id] = cls(transform_config(step, memo), n.id)
            low, high = cls.min_inputs, cls.max_inputs
            count = len(n.inputs)
            if count < low or (high is not None and count > high):
                want = (
                    f"exactly {low}"
                    if low == high
                    else f"at least {low}"
                    if high is None
                    else f"{low} to {high}"
                )
                issues.append(SpecIssue(in_path, f"'{cls.type}' takes {want} input(s), got {count}"))
        else:
            try:
                c.configs[n.id] = endpoint_config(n, memo)
            except ValidationError as exc:  # pragma: no cover - checked earlier
                issues += pyd.from_pydantic(exc, f"{base}.config")
            places = secret_places(n.config or {})
            if places:
                c.secrets[n.id] = tuple(places)
            if n.kind == "source" and n.inputs:
                issues.append(SpecIssue(in_path, "a source takes no inputs"))
            if n.kind == "destination" and not n.inputs:
                issues.append(SpecIssue(in_path, "a destination needs an input"))

    for n in nodes:
        base = c.paths.get(n.id, "")
        for j, ref in enumerate(n.inputs):
            where = f"{base}.inputs[{j}]" if c.form == "graph" else base
            producer, port = parse_input(ref)
            if producer not in by_id:
                issues.append(SpecIssue(where, f"unknown node '{producer}'", ", ".join(ids)))
                continue
            src = by_id[producer]
            if src.kind == "destination":
                issues.append(
                    SpecIssue(where, f"'{producer}' is a destination; destinations have no outputs")
                )
                continue
            ports = c.transforms[producer].output_ports() if producer in c.transforms else ["out"]
            if port not in ports:
                issues.append(SpecIssue(where, f"node '{producer}' has no port '{port}'", ", ".join(ports)))
    for key in c.graph.layout:
        if key not in by_id:
            issues.append(SpecIssue(f"layout.{key}", f"unknown node '{key}'", ", ".join(ids)))
    if not any(n.kind == "source" for n in nodes):
        issues.append(SpecIssue("nodes", "a pipeline needs at least one source"))
    if issues:
        return issues

    order, cycle = _toposort(nodes)
    if cycle:
        first = cycle[0]
        issues.append(SpecIssue(f"{c.paths[first]}.inputs", "cycle: " + " -> ".join(cycle)))
    c.order = order
    return issues


def _toposort(nodes: list[Node]) -> tuple[list[str], list[str]]:
    """Producers before consumers, or the first cycle found. Iterative: a chain of 100k nodes
    listed in any order needs no deep recursion."""
    deps = {n.id: [parse_input(r)[0] for r in n.inputs] for n in nodes}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    order: list[str] = []
    for n in nodes:
        if state.get(n.id):
            continue
        state[n.id] = 1
        path = [n.id]
        pending = [iter(deps.get(n.id, []))]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                pending.pop()
                done = path.pop()
                state[done] = 2
                order.append(done)
            elif state.get(dep) == 1:
                return [], [*path[path.index(dep) :], dep]
            elif not state.get(dep):
                state[dep] = 1
                path.append(dep)
                pending.append(iter(deps.get(dep, [])))
    return order, []


# ---- types, where the input schema is known --------------------------------------------------
def _check_schemas(c: Plan, ctx: Any) -> list[SpecIssue]:
    """Plan every transformation over empty frames of the sources' schemas (no data is read)."""
    if not any(t.type not in ("python", "sql") for t in c.transforms.values()):
        return []  # nothing to check: the sources' schemas are not read at all
    from engine.context import NodeContext, RunContext

    run_ctx = ctx or RunContext()
    schemas: dict[tuple[str, str], pl.Schema] = {}
    issues: list[SpecIssue] = []
    by_id = {n.id: n for n in c.graph.nodes}  # graph.node() is a linear search: quadratic here
    empty: dict[tuple, pl.LazyFrame] = {}  # one empty frame per schema (a chain mostly keeps its schema)

    def frame(schema: pl.Schema) -> pl.LazyFrame:
        key = tuple(schema.items())
        if key not in empty:
            empty[key] = pl.LazyFrame(schema=schema)
        return empty[key]

    for node_id in c.order:
        node = by_id[node_id]
        if node.kind == "source":
            schema = _source_schema(node, c.configs[node_id], run_ctx)
            if schema is not None:
                schemas[(node_id, "out")] = schema
            continue
        if node.kind != "transform":
            continue
        ins = [schemas.get(parse_input(r)) for r in node.inputs]
        if any(s is None for s in ins):
            continue
        transform = c.transforms[node_id]
        path = f"{c.paths[node_id]}.transform" if c.form == "graph" else c.paths[node_id]
        if transform.type in ("python", "sql"):
            continue  # user code: types are only known by running it
        try:
            outs = transform.apply([frame(s) for s in ins], NodeContext(run_ctx, node_id))
            for port, lf in outs.items():
                schemas[(node_id, port)] = lf.collect_schema()
        except AggregatorError as exc:
            param = getattr(exc, "param", None)
            msg = str(exc).removeprefix(f"node '{node_id}': ")
            issues.append(SpecIssue(f"{path}.{param}" if param else path, msg))
        except (pl.exceptions.PolarsError, ValueError, TypeError) as exc:
            issues.append(SpecIssue(path, "type mismatch: " + str(exc).strip().splitlines()[0]))
        except OverflowError as exc:  # a number in the config too large for Polars' types
            issues.append(SpecIssue(path, f"a number is out of range: {exc}"))
    return issues


def _source_schema(node: Node, config: ConnectorConfig, ctx: Any) -> pl.Schema | None:
    try:
        cls = connectors.get(node.connector_type or "")
        return cls.make_source(config, ctx, node.id).schema()
    except Exception:  # an unreachable source is a run-time error, not a spec error
        return None
