"""Property tests: linear -> graph -> linear is the identity; graph -> file -> graph too."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.spec.convert import graph_to_linear, linear_to_graph
from engine.spec.models import GraphPipeline, LinearPipeline, dump
from engine.spec.validate import validate

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
