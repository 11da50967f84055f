"""The node-graph view of the document (NodeGraphQt).

The canvas keeps no pipeline of its own: it redraws from the document whenever the document
changes, and turns the user's gestures (connect, detach, move, drop, rename) into document
commands instead of letting NodeGraphQt change its model. NodeGraphQt's own undo stack is never
used; the items it holds are only the picture of the document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from NodeGraphQt import BaseNode, NodeGraph
from PySide6.QtCore import QObject, QPoint, QRectF, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGraphicsSimpleTextItem

from engine.api.pipelines import node_key, output_ports_of
from ui.editor.badges import ProgressBadge, status_color
from ui.editor.document import PipelineDocument
from ui.editor.minimap import Minimap

PALETTE_MIME_PREFIX = "aggregator-node:"
KIND_COLORS = {"source": (40, 110, 80), "transform": (50, 80, 120), "destination": (120, 80, 40)}
ERROR_BORDER = (230, 60, 60, 255)
PORT_COLORS = {"rejected": (220, 80, 80)}
MIN_NODE_PX = 78  # the narrowest node's width on screen when a pipeline opens (names stay drawn)


class PipelineNode(BaseNode):
    """Base of the per-type node classes; `info` is that type's entry from node_types()."""

    __identifier__ = "aggregator"
    NODE_NAME = "node"
    info: dict[str, Any] = {}

    def __init__(self):
        super().__init__()
        self.set_port_deletion_allowed(True)
        for port in self.info.get("inputs", []):
            self.add_input(port["name"], multi_input=port["multi"])
        for name in self.info.get("outputs", []):
            self.add_output(name, multi_output=True, color=PORT_COLORS.get(name))
        r, g, b = KIND_COLORS.get(self.info.get("kind", ""), (60, 60, 60))
        self.model.color = (r, g, b, 255)
        self.view.color = (r, g, b, 255)


def node_classes(types: list[dict[str, Any]]) -> dict[str, type[PipelineNode]]:
    """One NodeGraphQt class per palette entry (key -> class)."""
    out = {}
    for info in types:
        name = "".join(p.title() for p in info["key"].replace(":", "_").split("_"))
        out[info["key"]] = type(name, (PipelineNode,), {"NODE_NAME": info["title"], "info": info})
    return out


def input_index(info: dict[str, Any], port_name: str) -> int | None:
    """The document input index a port stands for (None: append, for an open-ended port)."""
    ports = info.get("inputs", [])
    if len(ports) == 1 and ports[0]["multi"]:
        return None
    names = [p["name"] for p in ports]
    return names.index(port_name) if port_name in names else None


class _GestureGraph(NodeGraph):
    """NodeGraph whose user gestures are reported, not applied (the document applies them)."""

    def __init__(self, canvas: PipelineCanvas, **kwargs):
        self._canvas = canvas
        super().__init__(**kwargs)

    def _on_connection_changed(self, disconnected, connected):
        self._canvas._gesture_connections(disconnected, connected)

    def _on_connection_sliced(self, ports):
        self._canvas._gesture_connections(ports, [])

    def _on_nodes_moved(self, node_data):
        self._canvas._gesture_moved(node_data)

    def _on_node_data_dropped(self, mimedata, pos):
        self._canvas._gesture_dropped(mimedata, pos)

    def _on_search_triggered(self, node_type, pos):
        pass  # NodeGraphQt's tab search would create nodes behind the document's back

    def _on_insert_node(self, pipe, node_id, prev_node_pos):
        pass

    def _on_node_name_changed(self, node_id, name):
        self._canvas._gesture_renamed(node_id, name)


class PipelineCanvas(QObject):
    """`selection_changed(list of node ids)`; `widget` is the view to put in a layout."""

    selection_changed = Signal(list)

    def __init__(self, document: PipelineDocument, node_types: list[dict[str, Any]], parent=None):
        super().__init__(parent)
        self.document = document
        self.types = {t["key"]: t for t in node_types}
        self.graph = _GestureGraph(self)
        self.graph.set_acyclic(True)
        self.graph.disable_context_menu(True)
        self._classes = node_classes(node_types)
        self.graph.register_nodes(list(self._classes.values()))
        self._items: dict[str, PipelineNode] = {}  # document id -> drawn node
        self._doc_ids: dict[str, str] = {}  # NodeGraphQt id -> document id
        self._edges: set[tuple[str, str, str, str]] = set()  # drawn links
        self._errors: dict[str, str] = {}
        self._progress: dict[str, dict[str, Any]] = {}
        self._badges: dict[str, ProgressBadge] = {}  # node id -> its run progress pill
        self._syncing = False
        self.on_drop: Callable[[str, tuple[float, float]], None] | None = None
        self.graph.node_selection_changed.connect(self._on_selection)
        self.minimap = Minimap(self.graph.viewer())
        document.changed.connect(self.sync)
        document.renamed.connect(self._renamed)
        self.sync(None)

    @property
    def widget(self):
        return self.graph.widget

    # ---- document -> picture ----------------------------------------------------------------------
    def sync(self, touched: set[str] | None = None) -> None:
        """Redraw what the document changed (`None`: everything)."""
        self._syncing = True
        try:
            doc_ids = set(self.document.ids())
            check = set(self._items) | doc_ids if touched is None else set(touched)
            for node_id in check:
                if node_id not in doc_ids:
                    self._remove_item(node_id)
            for node in self.document.nodes:
                if node["id"] in check:
                    self._update_item(node)
            self._sync_edges()
        finally:
            self._syncing = False
        self.minimap.refit()

    def _renamed(self, old: str, new: str) -> None:
        """Keep the drawn node (and its selection) under its new id."""
        item = self._items.pop(old, None)
        if item is None:
            return
        self._items[new] = item
        self._doc_ids[item.id] = new
        self._edges = {(new if a == old else a, p, new if c == old else c, q) for a, p, c, q in self._edges}
        for table in (self._errors, self._progress, self._badges):
            if old in table:
                table[new] = table.pop(old)

    def _remove_item(self, node_id: str) -> None:
        item = self._items.pop(node_id, None)
        if item is None:
            return
        self._edges = {e for e in self._edges if node_id not in (e[0], e[2])}
        self._doc_ids.pop(item.id, None)
        self._badges.pop(node_id, None)  # a child of the node's picture: it goes with it
        self.graph.delete_node(item, push_undo=False)

    def _update_item(self, node: dict[str, Any]) -> None:
        node_id = node["id"]
        key = node_key(node)
        item = self._items.get(node_id)
        if item is not None and item.info.get("key") != key:
            self._remove_item(node_id)
            item = None
        if item is None:
            cls = self._classes.get(key) or self._unknown_class(key, node)
            item = cls()
            item.NODE_NAME = node.get("name") or node_id  # drawn once with its label
            pos = self.document.position(node_id) or (0.0, 0.0)
            self.graph.add_node(item, pos=[pos[0], pos[1]], selected=False, push_undo=False)
            self._items[node_id] = item
            self._doc_ids[item.id] = node_id
        label = node.get("name") or node_id
        if item.model.name != label:
            item.model.name = label
            item.view.name = label
        self._sync_outputs(item, output_ports_of(node))
        pos = self.document.position(node_id)
        if pos is not None and tuple(item.view.xy_pos) != pos:
            item.model.pos = [pos[0], pos[1]]
            item.view.xy_pos = [pos[0], pos[1]]
        self._paint_error(node_id)

    def _unknown_class(self, key: str, node: dict[str, Any]) -> type[PipelineNode]:
        """A node of a type the registries do not know (a plugin not loaded): drawn, flagged."""
        kind = node.get("kind", "transform")
        info = {
            "key": key,
            "kind": kind,
            "title": key,
            "inputs": [] if kind == "source" else [{"name": "in", "multi": True}],
            "outputs": [] if kind == "destination" else ["out"],
        }
        self.types[key] = info
        cls = node_classes([info])[key]
        self._classes[key] = cls
        self.graph.register_node(cls)
        return cls

    def _sync_outputs(self, item: PipelineNode, wanted: list[str]) -> None:
        have = list(item.outputs())
        if have == wanted:
            return
        # Ports keep the config's order (a split's branches, then `default`): from the first place
        # they differ, the drawn ports go and come back in order; their links are drawn again.
        keep = 0
        while keep < min(len(have), len(wanted)) and have[keep] == wanted[keep]:
            keep += 1
        for name in have[keep:]:
            port = item.get_output(name)
            port.clear_connections(push_undo=False, emit_signal=False)
            item.delete_output(name)
            self._edges = {e for e in self._edges if not (e[0] == self._doc_ids[item.id] and e[1] == name)}
        for name in wanted[keep:]:
            item.add_output(name, multi_output=True, color=PORT_COLORS.get(name))
        item.view.draw_node()

    def _port_for(self, consumer: str, index: int) -> str | None:
        info = self._items[consumer].info
        ports = info.get("inputs", [])
        if not ports:
            return None
        if len(ports) == 1 and ports[0]["multi"]:
            return ports[0]["name"]
        return ports[index]["name"] if index < len(ports) else None

    def _sync_edges(self) -> None:
        wanted = set()
        for producer, port, consumer, index in self.document.edges():
            if producer not in self._items or consumer not in self._items:
                continue  # a link to a missing node: validation reports it
            in_port = self._port_for(consumer, index)
            if in_port is not None and port in self._items[producer].outputs():
                wanted.add((producer, port, consumer, in_port))
        for edge in self._edges - wanted:
            self._link(edge, connect=False)
        for edge in sorted(wanted - self._edges):
            self._link(edge, connect=True)
        self._edges = wanted

    def _link(self, edge: tuple[str, str, str, str], connect: bool) -> None:
        producer, port, consumer, in_port = edge
        src = self._items.get(producer)
        dst = self._items.get(consumer)
        if src is None or dst is None:
            return
        out_port, inp = src.get_output(port), dst.get_input(in_port)
        if out_port is None or inp is None:
            return
        if connect:
            out_port.connect_to(inp, push_undo=False, emit_signal=False)
        else:
            out_port.disconnect_from(inp, push_undo=False, emit_signal=False)

    # ---- validation marks -------------------------------------------------------------------------
    def set_errors(self, errors: dict[str, str]) -> None:
        """node id -> message; those nodes get a red border and the message as tooltip."""
        old = set(self._errors)
        self._errors = dict(errors)
        for node_id in old | set(errors):
            self._paint_error(node_id)

    def _paint_error(self, node_id: str) -> None:
        item = self._items.get(node_id)
        if item is None:
            return
        message = self._errors.get(node_id)
        node = self.document.node(node_id) or {}
        info = item.info
        tip = f"{node_id}: {info.get('title', '')}"
        progress = self._progress.get(node_id)
        if progress:
            tip += f"\n{progress.get('status')}: {progress.get('rows_in')} in, {progress.get('rows_out')} out"
        if message:
            item.view.border_color = ERROR_BORDER
            item.view.setToolTip(f"{tip}\n{message}")
        else:
            # a run's status colours the border (running blue, success green, failed red)
            item.view.border_color = (
                (*status_color(progress.get("status")), 255) if progress else (46, 57, 66, 255)
            )
            item.view.setToolTip(tip + (f"\n{node['name']}" if node.get("name") else ""))
        item.view.update()

    def error_of(self, node_id: str) -> str | None:
        return self._errors.get(node_id)

    # ---- row counts on links, progress on nodes ------------------------------------------------
    def set_edge_counts(self, counts: dict[tuple[str, str], int]) -> None:
        """Label the links leaving each (node, port) with the rows that passed it."""
        for (node_id, port), rows in counts.items():
            item = self._items.get(node_id)
            out = item.get_output(port) if item is not None else None
            if out is None:
                continue
            for pipe in out.view.connected_pipes:
                label = getattr(pipe, "_rows_label", None)
                if label is None:
                    label = QGraphicsSimpleTextItem(pipe)
                    label.setBrush(QColor(230, 230, 160))
                    pipe._rows_label = label
                label.setText(f"{rows:,} rows")
                mid = pipe.path().pointAtPercent(0.5)
                label.setPos(mid.x() - label.boundingRect().width() / 2, mid.y() - 18)
                pipe.setToolTip(f"{node_id}.{port}: {rows:,} rows")

    def edge_labels(self, node_id: str, port: str = "out") -> list[str]:
        """The row-count labels on the links leaving (node, port), as drawn."""
        item = self._items.get(node_id)
        out = item.get_output(port) if item is not None else None
        if out is None:
            return []
        labels = [getattr(pipe, "_rows_label", None) for pipe in out.view.connected_pipes]
        return [label.text() for label in labels if label is not None]

    def set_progress(self, node_id: str | None, stats: dict[str, Any] | None) -> None:
        """A run's progress on a node (status and rows): a pill under the node, its border colour
        and its tooltip. `None` clears every node (a new run starts)."""
        if node_id is None:
            self._progress = {}
            for badge in self._badges.values():
                if badge.scene() is not None:
                    badge.scene().removeItem(badge)
            self._badges.clear()
            for nid in self._items:
                self._paint_error(nid)
            return
        item = self._items.get(node_id)
        if item is None:
            return
        self._progress[node_id] = stats = dict(stats or {})
        badge = self._badges.get(node_id)
        if badge is None or badge.parentItem() is not item.view:
            badge = self._badges[node_id] = ProgressBadge(item.view)
        badge.set_stats(stats)
        self._paint_error(node_id)

    def progress_of(self, node_id: str) -> dict[str, Any] | None:
        """The run progress drawn on a node (status, rows_in, rows_out, ...), if any."""
        return self._progress.get(node_id)

    def badge_text(self, node_id: str) -> str | None:
        """The text of the progress pill under a node, as the user reads it."""
        badge = self._badges.get(node_id)
        return badge.text if badge is not None and badge.isVisible() else None

    # ---- selection and view -----------------------------------------------------------------------
    def item(self, node_id: str) -> PipelineNode | None:
        return self._items.get(node_id)

    def selected_ids(self) -> list[str]:
        return [self._doc_ids[n.id] for n in self.graph.selected_nodes() if n.id in self._doc_ids]

    def select(self, ids: list[str]) -> None:
        self.graph.clear_selection()
        for node_id in ids:
            item = self._items.get(node_id)
            if item is not None:
                item.view.setSelected(True)
        self.selection_changed.emit(self.selected_ids())

    def center_on(self, node_id: str) -> None:
        item = self._items.get(node_id)
        if item is not None:
            self.graph.center_on([item])

    def fit_to_view(self, readable: bool = False) -> None:
        """Frame the whole pipeline; `readable`: never so small that the nodes lose their names
        (a long pipeline then shows from its sources on; the minimap shows the rest)."""
        self.zoom_to(list(self._items), readable=readable)

    def zoom_to(self, ids: list[str], readable: bool = False) -> None:
        """Frame these nodes (a part of a long pipeline, readable)."""
        items = [self._items[i].view for i in ids if i in self._items]
        if not items:
            return
        # NodeGraphQt's zoom_to_nodes groups the items to measure them (0.3 s for 200 nodes).
        rect = items[0].sceneBoundingRect()
        for view in items[1:]:
            rect = rect.united(view.sceneBoundingRect())
        viewer = self.graph.viewer()
        viewer._scene_range = rect.adjusted(-40, -40, 40, 40)
        viewer._update_scene()
        if viewer.get_zoom() > 0.1:
            viewer.reset_zoom(viewer._scene_range.center())
            return
        narrowest = min(view.sceneBoundingRect().width() for view in items)
        scale = viewer.transform().m11()
        if readable and narrowest * scale < MIN_NODE_PX:
            # NodeGraphQt draws a node narrower than 70 screen px as a bare box, without its name.
            scale = MIN_NODE_PX / narrowest
            port = viewer.viewport().rect()
            width, height = port.width() / scale, port.height() / scale
            whole = viewer._scene_range
            viewer._scene_range = QRectF(whole.left(), whole.center().y() - height / 2, width, height)
            viewer._update_scene()

    def _on_selection(self, _selected, _deselected) -> None:
        self.selection_changed.emit(self.selected_ids())

    def scene_center(self) -> tuple[float, float]:
        viewer = self.graph.viewer()
        center = viewer.mapToScene(viewer.viewport().rect().center())
        return (center.x(), center.y())

    # ---- user gestures -> document commands ----------------------------------------------------
    def _port_ends(self, pair) -> tuple[str, str, str, str] | None:
        """(producer, port, consumer, input port) of a pair of port views, either order."""
        a, b = pair
        out_view, in_view = (a, b) if a.port_type == "out" else (b, a)
        producer = self._doc_ids.get(out_view.node.id)
        consumer = self._doc_ids.get(in_view.node.id)
        if producer is None or consumer is None:
            return None
        return producer, out_view.name, consumer, in_view.name

    def _gesture_connections(self, disconnected, connected) -> None:
        if self._syncing:
            return
        removals, additions = [], []
        for pair in disconnected:
            ends = self._port_ends(pair)
            if ends:
                removals.append(ends[:3])
        for pair in connected:
            ends = self._port_ends(pair)
            if ends:
                additions.append((*ends[:3], input_index(self._items[ends[2]].info, ends[3])))
        self.document.relink(removals, additions)
        # The viewer removed a detached pipe's picture itself; draw the document's links again.
        self._edges.clear()
        for item in self._items.values():
            for port in item.output_ports():
                port.clear_connections(push_undo=False, emit_signal=False)
        self._sync_edges()

    def _gesture_moved(self, node_data: dict) -> None:
        positions = {}
        for view, _prev in node_data.items():
            node_id = self._doc_ids.get(view.id)
            if node_id is not None:
                x, y = view.xy_pos
                positions[node_id] = (float(x), float(y))
        self.document.move_nodes(positions)

    def _gesture_dropped(self, mimedata, pos: QPoint) -> None:
        text = mimedata.text() if mimedata.hasText() else ""
        if text.startswith(PALETTE_MIME_PREFIX) and self.on_drop is not None:
            self.on_drop(text[len(PALETTE_MIME_PREFIX) :], (float(pos.x()), float(pos.y())))

    def _gesture_renamed(self, view_id: str, name: str) -> None:
        node_id = self._doc_ids.get(view_id)
        node = self.document.node(node_id) if node_id else None
        if node is None:
            return
        node = dict(node)
        if name and name != node_id:
            node["name"] = name
        else:
            node.pop("name", None)
        self.document.set_node(node_id, node, f"Rename {node_id}")
        self.sync({node_id})
