"""The pipeline document: models, forms, validation and files."""

from engine.spec.models import GraphPipeline, LinearPipeline, Node

__all__ = ["GraphPipeline", "LinearPipeline", "Node"]
