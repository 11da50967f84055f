"""Auto-layout: nodes in layers by their longest path from a source, left to right.

Within a layer nodes are ordered by the mean row of their producers (one barycentre pass), which
keeps most links from crossing without the cost of a full Sugiyama layout.
"""

from __future__ import annotations

from typing import Any

X_STEP = 260.0
Y_STEP = 150.0


def _producers(node: dict[str, Any]) -> list[str]:
    return [ref.partition(".")[0] for ref in node.get("inputs") or []]


def layers(nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Layer of each node: 0 for nodes without inputs, else 1 + the deepest producer's layer
    (a cycle or an unknown producer counts as layer 0 there, so a broken graph still lays out)."""
    by_id = {n["id"]: n for n in nodes}
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(node_id: str) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in visiting or node_id not in by_id:
            return -1
        visiting.add(node_id)
        deps = [visit(p) for p in _producers(by_id[node_id])]
        visiting.discard(node_id)
        depth[node_id] = 1 + max(deps, default=-1)
        return depth[node_id]

    for n in nodes:
        visit(n["id"])
    return depth


def auto_layout(nodes: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Positions for every node (x by layer, y by order within the layer, centred on y = 0)."""
    depth = layers(nodes)
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(depth[n["id"]], []).append(n["id"])
    by_id = {n["id"]: n for n in nodes}
    row: dict[str, float] = {}
    positions: dict[str, tuple[float, float]] = {}
    for layer in sorted(columns):
        ids = columns[layer]
        if layer > 0:

            def barycentre(node_id: str, ids=ids) -> float:
                rows = [row[p] for p in _producers(by_id[node_id]) if p in row]
                return sum(rows) / len(rows) if rows else float(ids.index(node_id))

            ids = sorted(ids, key=barycentre)
        top = -(len(ids) - 1) / 2.0
        for i, node_id in enumerate(ids):
            row[node_id] = top + i
            positions[node_id] = (layer * X_STEP, (top + i) * Y_STEP)
    return positions
