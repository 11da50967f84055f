"""Property tests: linear -> graph -> linear is the identity; graph -> file -> graph too; garbage
documents and text give a spec error and nothing else."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import SpecError
from engine.spec.convert import graph_to_linear, linear_to_graph
from engine.spec.io import parse_document
from engine.spec.models import GraphPipeline, LinearPipeline, dump
from engine.spec.validate import validate
from engine.transforms import registry as transforms_registry

names = st.text(alphabet=st.sampled_from("abcdefgh xyz_-1"), min_size=1, max_size=12).filter(
    lambda s: s.strip()
)
fields = st.sampled_from(["price", "qty", "name", "address.city", "email"])

steps = st.one_of(
    st.builds(
        lambda f, op: {"type": "field_mapping", "field_name": f, "operation": op},
        fields,
        st.sampled_from(["title_case", "lowercase", "uppercase", "trim"]),
    ),
    st.builds(
        lambda f: {
            "type": "field_operation",
            "field_name": f,
            "operation": "round",
            "parameters": {"digits": 2},
        },
        fields,
    ),
    st.builds(
        lambda f, v: {"type": "record_filter", "condition": {"field": f, "operator": "gt", "value": v}},
        fields,
        st.integers(-5, 5),
    ),
    st.builds(
        lambda fs: {"type": "field_removal", "field_names": fs}, st.lists(fields, min_size=1, max_size=3)
    ),
    st.builds(lambda f, d: {"type": "sort", "fields": [f], "descending": d}, fields, st.booleans()),
    st.builds(lambda f: {"type": "field_validation", "field_name": f, "validation_type": "not_null"}, fields),
)
schedules = st.sampled_from(
    [
        {"type": "manual"},
        {"type": "interval", "seconds": 30},
        {"type": "cron", "expression": "*/5 * * * *", "timezone": "Europe/Berlin"},
    ]
)


@st.composite
def linear_docs(draw):
    source_names = draw(st.lists(names, min_size=1, max_size=4, unique_by=lambda s: s.strip()))
    sources = [
        {
            "name": n,
            "connector_type": draw(st.sampled_from(["file", "File", "duckdb"])),
            "config": {"path": f"{i}.json"} if i % 2 == 0 else {"table": f"t{i}"},
        }
        for i, n in enumerate(source_names)
    ]
    for s in sources:
        if s["connector_type"] == "duckdb":
            s["config"] = {"table": "t"}
        else:
            s["config"] = {"path": "in.json"}
    transformations = draw(st.lists(steps, max_size=6))
    if len(source_names) > 1 and draw(st.booleans()):
        transformations.insert(
            draw(st.integers(0, len(transformations))),
            {
                "type": "join",
                "join_type": draw(st.sampled_from(["inner", "left", "anti"])),
                "primary_key": "id",
                "foreign_key": "id",
                "join_source": source_names[-1],
            },
        )
    dest_names = draw(st.lists(names, min_size=1, max_size=3, unique_by=lambda s: s.strip()))
    return {
        "name": draw(names),
        "sources": sources,
        "transformations": transformations,
        "destinations": [
            {"name": n, "connector_type": "file", "config": {"path": f"out{i}.json"}}
            for i, n in enumerate(dest_names)
        ],
        "schedule": draw(schedules),
    }


@settings(max_examples=150, deadline=None)
@given(linear_docs())
def test_linear_graph_linear_is_identity(doc):
    compiled = validate(doc, check_schemas=False)
    linear = LinearPipeline.model_validate(doc)
    graph, _ = linear_to_graph(linear)
    assert dump(graph_to_linear(graph)) == dump(linear)
    # every node id is unique and every input points to an earlier node
    ids = [n.id for n in compiled.graph.nodes]
    assert len(ids) == len(set(ids))


@settings(max_examples=100, deadline=None)
@given(linear_docs(), st.floats(-1e4, 1e4))
def test_graph_document_round_trips_through_json(doc, offset):
    graph = validate(doc, check_schemas=False).graph
    layout = {n.id: (offset + i * 10.0, -offset) for i, n in enumerate(graph.nodes)}
    graph = graph.model_copy(update={"layout": layout})
    text = json.dumps(dump(graph))
    again = validate(json.loads(text), check_schemas=False).graph
    assert dump(again) == dump(graph)
    assert isinstance(again, GraphPipeline)


# ---- hostile documents: garbage gives a clean spec error, never another exception ----------------
# Strings that mean something somewhere in a spec, so garbage reaches past the first type check.
_WORDS = [
    *transforms_registry.names(),
    *["file", "duckdb", "source", "transform", "destination", "out", "rejected", "in", "value"],
    *["round", "uppercase", "trim", "expression", "gt", "in", "5s", "PT1M", "1mo", "avg", "inner"],
    *["a + b", "round(value, 2)", "(((", "", " ", "5\ud800s", "\udfff", "x" * 300],
]
_KEYS = sorted(
    {"type", "kind", "id", "inputs", "config", "transform", "name", "sources", "nodes", "parameters"}
    | {
        field
        for name in transforms_registry.names()
        for field in transforms_registry.get(name).Config.model_fields
    }
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(),
    st.sampled_from(_WORDS),
    st.text(max_size=20),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
)
garbage = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
step_garbage = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(transforms_registry.names()),
    st.dictionaries(st.sampled_from(_KEYS), garbage, max_size=4),
)


def _only_spec_errors(run) -> None:
    """`run` returns or raises SpecError, within the 2 s of CPU a hostile spec may take (this
    process's CPU time: steady on a machine others load; the wall clock only bounds waiting)."""
    start, wall = time.process_time(), time.perf_counter()
    try:
        run()
    except SpecError as exc:
        assert exc.issues and all(len(str(i)) < 1000 and "\n" not in str(i) for i in exc.issues)
    assert time.process_time() - start < 2.0 and time.perf_counter() - wall < 20.0


def _replace_somewhere(doc, path: list[int], value):
    """`doc` with the value at a position chosen by `path` (indexes modulo each container's size)."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    key = keys[path[0] % len(keys)]
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[key] = _replace_somewhere(doc[key], path[1:], value)
    return copy


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage)
def test_garbage_documents_give_only_spec_errors(doc):
    _only_spec_errors(lambda: validate(doc, check_schemas=False))
    if isinstance(doc, dict):
        text = json.dumps(doc, ensure_ascii=True)  # lone surrogates as \ud800 escapes
        _only_spec_errors(lambda: validate(parse_document(text)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linear_docs(), st.lists(step_garbage, max_size=3), st.lists(st.integers(0, 50), max_size=6), garbage)
def test_documents_with_garbage_inside_give_only_spec_errors(doc, bad_steps, where, value):
    doc = {**doc, "transformations": [*doc["transformations"], *bad_steps]}
    doc = _replace_somewhere(doc, where, value)
    _only_spec_errors(lambda: validate(doc))
    if isinstance(doc, dict):
        _only_spec_errors(lambda: validate(graph_like(doc)))


def graph_like(doc: dict) -> dict:
    """The same steps as graph nodes, so the graph form's own checks see the garbage too."""
    steps = doc.get("transformations") if isinstance(doc.get("transformations"), list) else []
    nodes = [{"id": "src", "kind": "source", "connector_type": "file", "config": {"path": "in.csv"}}]
    for i, step in enumerate(steps):
        nodes.append({"id": f"n{i}", "kind": "transform", "inputs": [nodes[-1]["id"]], "transform": step})
    return {"name": "g", "nodes": nodes}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(st.sampled_from('[]{}":,&*!|>- \n\t#?ab1.e')), st.binary().map(repr)))
def test_garbage_text_gives_only_spec_errors(text):
    _only_spec_errors(lambda: parse_document(text))
    _only_spec_errors(lambda: parse_document(text, yaml_syntax=True))
