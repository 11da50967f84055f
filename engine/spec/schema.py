"""JSON Schema of the pipeline document, with every registered transformation and connector."""

from __future__ import annotations

from typing import Any

from engine.connectors import registry as connectors
from engine.spec.models import GraphPipeline, LinearPipeline
from engine.transforms import registry as transforms


def document_schema() -> dict[str, Any]:
    steps = []
    defs: dict[str, Any] = {}
    for name, cls in sorted(transforms.all_types().items()):
        schema = cls.Config.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[f"transform_{name}"] = schema
        steps.append({"$ref": f"#/$defs/transform_{name}"})
    endpoints = {}
    for name in connectors.names():
        info = connectors.get(name).describe()
        endpoints[name] = {"source": info["source_schema"], "destination": info["destination_schema"]}

    linear = LinearPipeline.model_json_schema(ref_template="#/$defs/{model}")
    graph = GraphPipeline.model_json_schema(ref_template="#/$defs/{model}")
    for sub in (linear, graph):
        defs.update(sub.pop("$defs", {}))
    linear["properties"]["transformations"]["items"] = {"anyOf": steps}
    defs["Node"]["properties"]["transform"] = {"anyOf": [*steps, {"type": "null"}]}
    defs["LinearPipeline"], defs["GraphPipeline"] = linear, graph
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Data Aggregator pipeline, version 1",
        "description": "Linear form (sources/transformations/destinations) or graph form (nodes).",
        "anyOf": [{"$ref": "#/$defs/LinearPipeline"}, {"$ref": "#/$defs/GraphPipeline"}],
        "$defs": defs,
        "x-connectors": endpoints,
    }
