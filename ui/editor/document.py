"""The pipeline document the editor edits: the graph-form dict and the commands that change it.

The spec is the model (architecture rule 2): this holds the one copy of the pipeline, and every
change is a QUndoCommand on its stack (rule 3), in the style of orange-canvas-core's
document/commands. Each command records the affected nodes before and after (with their place in
the node list) and the layout entries it touches, so undo restores the document exactly.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

Doc = dict[str, Any]
_SLUG = re.compile(r"[^A-Za-z0-9_\-]+")
MOVE_ID, EDIT_ID = 1, 2


def new_document(name: str = "Untitled pipeline") -> Doc:
    return {"name": name, "spec_version": 1, "nodes": [], "layout": {}, "schedule": {"type": "manual"}}


def parse_ref(ref: str) -> tuple[str, str]:
    node, _, port = ref.partition(".")
    return node, port or "out"


def make_ref(node_id: str, port: str) -> str:
    return node_id if port == "out" else f"{node_id}.{port}"


def new_node(node_id: str, kind: str, type_name: str) -> dict[str, Any]:
    """A fresh node of a palette type (sources have no `inputs` key, as in hand-written specs)."""
    if kind == "transform":
        return {"id": node_id, "kind": "transform", "inputs": [], "transform": {"type": type_name}}
    node: dict[str, Any] = {"id": node_id, "kind": kind, "connector_type": type_name, "config": {}}
    if kind == "destination":
        node["inputs"] = []
    return node


class PipelineDocument(QObject):
    """`changed(ids)` after every change: the node ids touched, or None for a new document."""

    changed = Signal(object)
    renamed = Signal(str, str)  # old id, new id: emitted just before the change that renames

    def __init__(self, doc: Doc | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self._doc: Doc = new_document()
        self.load(doc or new_document())

    # ---- reading -------------------------------------------------------------------------------
    def to_dict(self) -> Doc:
        """A copy of the document as saved (the caller may keep or change it freely)."""
        return copy.deepcopy(self._doc)

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self._doc.get(key, default))

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The live node list: read it, never change it (use the commands)."""
        return self._doc["nodes"]

    def node(self, node_id: str) -> dict[str, Any] | None:
        return next((n for n in self._doc["nodes"] if n.get("id") == node_id), None)

    def index_of(self, node_id: str) -> int:
        return next(i for i, n in enumerate(self._doc["nodes"]) if n.get("id") == node_id)

    def ids(self) -> list[str]:
        return [n["id"] for n in self._doc["nodes"]]

    def position(self, node_id: str) -> tuple[float, float] | None:
        pos = self._doc.get("layout", {}).get(node_id)
        return (float(pos[0]), float(pos[1])) if pos else None

    def edges(self) -> list[tuple[str, str, str, int]]:
        """(producer, producer port, consumer, input index) for every link."""
        out = []
        for n in self._doc["nodes"]:
            for i, ref in enumerate(n.get("inputs") or []):
                src, port = parse_ref(ref)
                out.append((src, port, n["id"], i))
        return out

    def unique_id(self, base: str, taken: set[str] | None = None) -> str:
        base = _SLUG.sub("_", base).strip("_") or "node"
        if not re.match(r"[A-Za-z_]", base):
            base = f"n_{base}"
        used = set(self.ids()) | (taken or set())
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        return candidate

    # ---- loading (not undoable: a new document starts a new history) ------------------------------
    def load(self, doc: Doc) -> None:
        doc = copy.deepcopy(doc)
        doc.setdefault("nodes", [])
        doc.setdefault("layout", {})
        doc["layout"] = {k: [float(v[0]), float(v[1])] for k, v in doc["layout"].items()}
        self._doc = doc
        self.undo_stack.clear()
        self.undo_stack.setClean()
        self.changed.emit(None)

    # ---- primitives used by the commands only --------------------------------------------------
    def _apply(self, state: dict[str, Any]) -> None:
        """Put the nodes, layout entries and top-level fields of `state` in place."""
        nodes = self._doc["nodes"]
        node_states: dict[str, tuple[int, dict | None]] = state.get("nodes", {})
        for node_id, (_index, node) in node_states.items():
            if node is None:
                self._doc["nodes"] = nodes = [n for n in nodes if n.get("id") != node_id]
        for node_id, (index, node) in sorted(node_states.items(), key=lambda kv: kv[1][0]):
            if node is None:
                continue
            at = next((i for i, n in enumerate(nodes) if n.get("id") == node_id), None)
            if at is None:
                nodes.insert(min(index, len(nodes)), copy.deepcopy(node))
            else:
                nodes[at] = copy.deepcopy(node)
        layout = self._doc.setdefault("layout", {})
        for node_id, pos in state.get("layout", {}).items():
            if pos is None:
                layout.pop(node_id, None)
            else:
                layout[node_id] = [float(pos[0]), float(pos[1])]
        for key, value in state.get("fields", {}).items():
            if value is None:
                self._doc.pop(key, None)
            else:
                self._doc[key] = copy.deepcopy(value)
        touched = set(node_states) | set(state.get("layout", {}))
        self.changed.emit(touched)

    def _snapshot(self, node_ids, layout_ids=()) -> dict[str, Any]:
        nodes = {}
        for node_id in node_ids:
            node = self.node(node_id)
            index = self.index_of(node_id) if node else len(self._doc["nodes"])
            nodes[node_id] = (index, copy.deepcopy(node))
        layout = {k: self._doc.get("layout", {}).get(k) for k in layout_ids}
        return {"nodes": nodes, "layout": copy.deepcopy(layout)}

    # ---- edits: each pushes one command ----------------------------------------------------------
    def push(self, command: QUndoCommand) -> None:
        self.undo_stack.push(command)

    def add_node(
        self, kind: str, type_name: str, pos: tuple[float, float], node_id: str | None = None
    ) -> str:
        node_id = node_id or self.unique_id(type_name)
        self.push(AddNodes(self, [new_node(node_id, kind, type_name)], {node_id: pos}, f"Add {type_name}"))
        return node_id

    def remove_nodes(self, ids: list[str]) -> None:
        ids = [i for i in ids if self.node(i) is not None]
        if ids:
            self.push(RemoveNodes(self, ids))

    def connect(self, producer: str, port: str, consumer: str, index: int | None = None) -> bool:
        """Link `producer.port` into `consumer`'s input `index` (None: append); False if refused."""
        return self.relink([], [(producer, port, consumer, index)])

    def disconnect(self, producer: str, port: str, consumer: str) -> bool:
        return self.relink([(producer, port, consumer)], [])

    def relink(self, removals: list[tuple], additions: list[tuple]) -> bool:
        """Remove and add links in one undo step; False when nothing changes (a refused link:
        into a source, out of a destination, a node into itself, or one already there)."""
        changed: dict[str, list[str]] = {}

        def inputs_of(node_id: str) -> list[str]:
            if node_id not in changed:
                changed[node_id] = list(self.node(node_id).get("inputs") or [])
            return changed[node_id]

        for producer, port, consumer in removals:
            if self.node(consumer) is not None:
                ref = make_ref(producer, port)
                changed[consumer] = [r for r in inputs_of(consumer) if r != ref]
        for producer, port, consumer, index in additions:
            target, source = self.node(consumer), self.node(producer)
            if target is None or source is None or producer == consumer:
                continue
            if target["kind"] == "source" or source["kind"] == "destination":
                continue
            inputs, ref = inputs_of(consumer), make_ref(producer, port)
            if index is None or index >= len(inputs):
                if ref not in inputs:
                    inputs.append(ref)
            else:
                inputs[index] = ref
        changed = {k: v for k, v in changed.items() if v != (self.node(k).get("inputs") or [])}
        if not changed:
            return False
        if len(changed) > 1:
            self.undo_stack.beginMacro("Connect" if additions else "Disconnect")
        for consumer, inputs in changed.items():
            verb = "Connect" if additions else "Disconnect"
            self.set_inputs(consumer, inputs, f"{verb} {consumer}")
        if len(changed) > 1:
            self.undo_stack.endMacro()
        return True

    def set_inputs(self, consumer: str, inputs: list[str], text: str) -> None:
        node = copy.deepcopy(self.node(consumer))
        node["inputs"] = inputs
        self.push(SetNode(self, consumer, node, text, merge=False))

    def set_node(self, node_id: str, node: dict[str, Any], text: str = "Edit node") -> None:
        """Replace a node's dict (config, transform, name); consecutive edits of one node merge."""
        if node != self.node(node_id):
            self.push(SetNode(self, node_id, node, text))

    def set_node_config(self, node_id: str, config: dict[str, Any]) -> None:
        node = copy.deepcopy(self.node(node_id))
        node["config"] = config
        self.set_node(node_id, node, f"Edit {node_id} config")

    def set_transform(self, node_id: str, transform: dict[str, Any]) -> None:
        node = copy.deepcopy(self.node(node_id))
        node["transform"] = transform
        self.set_node(node_id, node, f"Edit {node_id} transform")

    def rename_node(self, old: str, new: str) -> bool:
        if old == new or self.node(old) is None or self.node(new) is not None:
            return False
        self.push(RenameNode(self, old, new))
        return True

    def move_nodes(self, positions: dict[str, tuple[float, float]]) -> None:
        if positions:
            self.push(MoveNodes(self, positions))

    def set_field(self, key: str, value: Any) -> None:
        """A top-level field (name, description, schedule, error_handling); None removes it."""
        if value != self._doc.get(key):
            self.push(SetField(self, key, value))

    def paste(self, clip: dict[str, Any], offset: tuple[float, float] = (40.0, 40.0)) -> list[str]:
        """Paste copied nodes under fresh ids; links among them are kept, links to others dropped."""
        renames: dict[str, str] = {}
        for node in clip.get("nodes", []):
            renames[node["id"]] = self.unique_id(node["id"], set(renames.values()))
        nodes, positions = [], {}
        for node in clip.get("nodes", []):
            node = copy.deepcopy(node)
            old = node["id"]
            node["id"] = renames[old]
            if "inputs" in node:
                kept = [parse_ref(r) for r in node["inputs"] if parse_ref(r)[0] in renames]
                node["inputs"] = [make_ref(renames[src], port) for src, port in kept]
            nodes.append(node)
            x, y = clip.get("layout", {}).get(old, (0.0, 0.0))
            positions[node["id"]] = (x + offset[0], y + offset[1])
        if nodes:
            self.push(AddNodes(self, nodes, positions, f"Paste {len(nodes)} node(s)"))
        return [n["id"] for n in nodes]

    def copy_nodes(self, ids: list[str]) -> dict[str, Any]:
        chosen = [copy.deepcopy(n) for n in self.nodes if n["id"] in set(ids)]
        layout = {i: self._doc.get("layout", {}).get(i, [0.0, 0.0]) for i in ids}
        return {"nodes": chosen, "layout": copy.deepcopy(layout)}


class _StateCommand(QUndoCommand):
    """Undo/redo by putting a recorded before/after state in place."""

    def __init__(self, doc: PipelineDocument, text: str):
        super().__init__(text)
        self.doc = doc
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    def redo(self) -> None:
        self.doc._apply(self.after)

    def undo(self) -> None:
        self.doc._apply(self.before)


class AddNodes(_StateCommand):
    def __init__(self, doc, nodes: list[dict], positions: dict[str, tuple[float, float]], text="Add node"):
        super().__init__(doc, text)
        ids = [n["id"] for n in nodes]
        self.before = doc._snapshot([], ids)
        self.before["nodes"] = {i: (len(doc.nodes) + k, None) for k, i in enumerate(ids)}
        self.after = {
            "nodes": {n["id"]: (len(doc.nodes) + k, copy.deepcopy(n)) for k, n in enumerate(nodes)},
            "layout": {i: list(positions[i]) for i in ids if i in positions},
        }


class RemoveNodes(_StateCommand):
    """Removes the nodes, their layout entries and every link that reads them."""

    def __init__(self, doc, ids: list[str]):
        super().__init__(doc, f"Delete {len(ids)} node(s)")
        gone = set(ids)
        consumers = [
            n["id"]
            for n in doc.nodes
            if n["id"] not in gone and any(parse_ref(r)[0] in gone for r in n.get("inputs") or [])
        ]
        self.before = doc._snapshot([*ids, *consumers], ids)
        after_nodes: dict[str, tuple[int, dict | None]] = {i: (self.before["nodes"][i][0], None) for i in ids}
        for c in consumers:
            index, node = self.before["nodes"][c]
            node = copy.deepcopy(node)
            node["inputs"] = [r for r in node["inputs"] if parse_ref(r)[0] not in gone]
            after_nodes[c] = (index, node)
        self.after = {"nodes": after_nodes, "layout": dict.fromkeys(ids)}


class SetNode(_StateCommand):
    def __init__(self, doc, node_id: str, node: dict, text: str, merge: bool = True):
        super().__init__(doc, text)
        self.node_id = node_id
        self.merge = merge
        self.before = doc._snapshot([node_id])
        self.after = {"nodes": {node_id: (self.before["nodes"][node_id][0], copy.deepcopy(node))}}

    def id(self) -> int:
        return EDIT_ID if self.merge else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetNode) or not other.merge or other.node_id != self.node_id:
            return False
        self.after = other.after
        return True


class RenameNode(_StateCommand):
    """A new id: the node, its layout entry and every reference to it follow."""

    def __init__(self, doc, old: str, new: str):
        super().__init__(doc, f"Rename {old} to {new}")
        consumers = [n["id"] for n in doc.nodes if any(parse_ref(r)[0] == old for r in n.get("inputs") or [])]
        consumers = [c for c in consumers if c != old]
        self.before = doc._snapshot([old, *consumers], [old, new])
        self.before["nodes"][new] = (self.before["nodes"][old][0], None)
        index, node = self.before["nodes"][old]
        renamed = copy.deepcopy(node)
        renamed["id"] = new
        after: dict[str, tuple[int, dict | None]] = {old: (index, None), new: (index, renamed)}
        for c in consumers:
            c_index, c_node = self.before["nodes"][c]
            c_node = copy.deepcopy(c_node)
            c_node["inputs"] = [
                make_ref(new, parse_ref(r)[1]) if parse_ref(r)[0] == old else r for r in c_node["inputs"]
            ]
            after[c] = (c_index, c_node)
        self.after = {"nodes": after, "layout": {old: None, new: self.before["layout"].get(old)}}
        self.old, self.new = old, new

    def redo(self) -> None:
        self.doc.renamed.emit(self.old, self.new)
        super().redo()

    def undo(self) -> None:
        self.doc.renamed.emit(self.new, self.old)
        super().undo()


class MoveNodes(_StateCommand):
    def __init__(self, doc, positions: dict[str, tuple[float, float]]):
        super().__init__(doc, f"Move {len(positions)} node(s)")
        self.before = doc._snapshot([], list(positions))
        self.after = {"layout": {k: [float(v[0]), float(v[1])] for k, v in positions.items()}}


class SetField(_StateCommand):
    def __init__(self, doc, key: str, value: Any):
        super().__init__(doc, f"Set {key}")
        self.key = key
        self.before = {"fields": {key: doc.get(key)}}
        self.after = {"fields": {key: copy.deepcopy(value)}}

    def id(self) -> int:
        return EDIT_ID + 1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetField) or other.key != self.key:
            return False
        self.after = other.after
        return True
