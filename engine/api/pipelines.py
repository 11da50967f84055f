"""EngineAPI: the pipelines calls (see engine/api/core.py).

The editor's palette, port shapes and property forms come from `node_types()` (the registries'
own descriptions); documents travel as plain graph-form dicts, so the editor never holds a model
object of ours, only the document it edits.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from engine.api.core import EngineCore

RESOURCES_DIR = Path(__file__).resolve().parents[2] / "resources"
TEMPLATES_DIR = RESOURCES_DIR / "templates"
EXAMPLES_DIR = RESOURCES_DIR / "pipelines"
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
_NODE_PATH = re.compile(r"^nodes\[(\d+)\]")


def node_key(node: dict[str, Any]) -> str:
    """The palette key of a graph node: `source:file`, `transform:union`, `destination:duckdb`."""
    if node.get("kind") == "transform":
        from engine.transforms import registry

        type_name = str((node.get("transform") or {}).get("type", ""))
        return f"transform:{registry.canonical(type_name) or type_name}"
    return f"{node.get('kind')}:{node.get('connector_type')}"


def input_ports(min_inputs: int, max_inputs: int | None) -> list[dict[str, Any]]:
    """One port per input; an open-ended node (union) takes every input on one multi port."""
    if max_inputs is None:
        return [{"name": "in", "multi": True}]
    names = ["in", *(f"in{i + 1}" for i in range(1, max_inputs))]
    return [{"name": n, "multi": False} for n in names]


def output_ports_of(node: dict[str, Any]) -> list[str]:
    """A node's output ports for its current config (split branches, `rejected` when it can
    reject); a config that does not parse yet gets the type's usual ports."""
    kind = node.get("kind")
    if kind == "destination":
        return []
    if kind != "transform":
        return ["out"]
    from engine.transforms import registry

    step = node.get("transform") or {}
    try:
        cls = registry.get(str(step.get("type")))
    except KeyError:
        return ["out"]
    try:
        return cls(cls.Config.model_validate(step), node.get("id", "node")).output_ports()
    except Exception:  # an unfinished config: show the type's default shape
        return _default_outputs(cls)


def _default_outputs(cls) -> list[str]:
    from engine.transforms.base import REJECTED

    try:
        return cls(cls.Config.model_construct(type=cls.type), "node").output_ports()
    except Exception:
        return ["out", REJECTED] if cls.category in ("validate",) else ["out"]


def _transform_type(cls) -> dict[str, Any]:
    d = cls.describe()
    schema = d["config_schema"]
    return {
        "key": f"transform:{d['type']}",
        "kind": "transform",
        "type": d["type"],
        "title": d["title"],
        "category": d["category"],
        "description": d["description"],
        "config_schema": schema,
        "inputs": input_ports(d["min_inputs"], d["max_inputs"]),
        "min_inputs": d["min_inputs"],
        "max_inputs": d["max_inputs"],
        "outputs": _default_outputs(cls),
        "dynamic_outputs": d["type"] in ("split", "field_validation", "conditional"),
    }


def _connector_types(role: str) -> list[dict[str, Any]]:
    from engine.connectors import registry

    out = []
    for name in registry.names(role):
        d = registry.get(name).describe()
        schema = d["source_schema"] if role == "source" else d["destination_schema"]
        out.append(
            {
                "key": f"{role}:{name}",
                "kind": role,
                "type": name,
                "title": d["title"],
                "category": f"{role}s",
                "description": (schema or {}).get("description", "") or f"{d['title']} {role}",
                "config_schema": schema or {"type": "object", "properties": {}},
                "inputs": [] if role == "source" else [{"name": "in", "multi": False}],
                "min_inputs": 0 if role == "source" else 1,
                "max_inputs": 0 if role == "source" else 1,
                "outputs": ["out"] if role == "source" else [],
                "dynamic_outputs": False,
            }
        )
    return out


def issues_of(doc: Any) -> list[dict[str, Any]]:
    """Every validation issue of a document as plain dicts, each with the node it points at."""
    from engine.errors import SpecError
    from engine.spec.validate import validate

    try:
        validate(doc)
    except SpecError as exc:
        nodes = doc.get("nodes") if isinstance(doc, dict) else None
        out = []
        for issue in exc.issues:
            node_id = None
            m = _NODE_PATH.match(issue.path or "")
            if m and isinstance(nodes, list) and int(m.group(1)) < len(nodes):
                node = nodes[int(m.group(1))]
                node_id = node.get("id") if isinstance(node, dict) else None
            elif (issue.path or "").startswith("layout."):
                node_id = issue.path.split(".", 1)[1]
            out.append(
                {"path": issue.path, "message": issue.message, "allowed": issue.allowed, "node_id": node_id}
            )
        return out
    return []


def to_graph_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A document in graph form: a linear one is converted (its layout left for the editor)."""
    from engine.spec.convert import linear_to_graph
    from engine.spec.models import LinearPipeline, dump
    from engine.spec.validate import form_of

    if form_of(doc) == "graph":
        return doc
    graph, _origin = linear_to_graph(LinearPipeline.model_validate(doc))
    return dump(graph)


def write_json_atomically(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe_pipeline_file(path: Path, origin: str) -> dict[str, Any]:
    """{path, origin, name, description, mode, modified, error} of one spec file; a file that does
    not read is described too, with its error, so that it can be fixed or deleted."""
    from engine.spec.io import read_document

    entry: dict[str, Any] = {
        "path": str(path),
        "origin": origin,
        "name": path.stem,
        "description": "",
        "mode": "",
        "modified": path.stat().st_mtime,
        "error": "",
    }
    try:
        doc = read_document(path)
    except Exception as exc:  # any reader error is this file's problem: shown on its row
        entry["error"] = str(exc) or type(exc).__name__
        return entry
    schedule = doc.get("schedule") if isinstance(doc.get("schedule"), dict) else {}
    entry.update(
        name=str(doc.get("name") or path.stem),
        description=str(doc.get("description") or ""),
        mode=str(schedule.get("type") or "manual"),
    )
    return entry


_DESCRIBED: dict[tuple[str, str], tuple[tuple[int, int, int], dict[str, Any]]] = {}
_DESCRIBED_MAX = 10_000  # files remembered (then forgotten all at once)


def _describe_cached(path: Path, origin: str) -> dict[str, Any]:
    """`describe_pipeline_file`, kept while the file is unchanged (same inode, size and mtime in ns):
    `GET /pipelines` parsed every spec file, the examples' too, on every call (a quarter of the
    API's CPU under a mixed read load; tests/benchmarks/bench_api_load.py)."""
    try:
        st = path.stat()
    except OSError:
        return describe_pipeline_file(path, origin)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    key = (str(path), origin)
    hit = _DESCRIBED.get(key)
    if hit is not None and hit[0] == stamp:
        return dict(hit[1])
    entry = describe_pipeline_file(path, origin)
    if len(_DESCRIBED) >= _DESCRIBED_MAX:
        _DESCRIBED.clear()
    _DESCRIBED[key] = (stamp, dict(entry))
    return entry


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a spec file: {"document" (as the file has it), "name", "form", "mode",
    "nodes": [{id, kind}], "warnings": [one line each]}; SpecError naming the file otherwise.
    Needs no data directory. A warning is what works but should not be so: a password, token or
    key given in clear instead of `{"secret": NAME}`."""
    from engine.api.connectors import clear_secrets
    from engine.spec.io import load_pipeline, read_document

    compiled = load_pipeline(path)
    document = read_document(path)
    return {
        "document": document,
        "name": compiled.graph.name,
        "form": compiled.form,
        "mode": compiled.graph.schedule.type,
        "nodes": [{"id": n.id, "kind": n.kind} for n in compiled.graph.nodes],
        "warnings": [
            f'{where}: a secret given in clear (it works; write {{"secret": NAME}} and store it with'
            " `aggregator secret set NAME`)"
            for where in clear_secrets(document)
        ],
    }


class LocalPipelines:
    """The pipelines part of the in-process engine (`engine.pipelines`)."""

    def __init__(self, core: EngineCore):
        self._core = core

    @property
    def pipelines_dir(self) -> Path:
        """Where the user's own pipeline files live."""
        return self._core.data_dir / "pipelines"

    def list(self) -> list[dict[str, Any]]:
        """Every pipeline file: the user's own (`origin` "mine", newest first), then the shipped
        examples and templates by name. Each as `describe_pipeline_file` gives it, plus `last_run`:
        the newest run record of a pipeline of that name, or None."""
        folders = [(self.pipelines_dir, "mine"), (EXAMPLES_DIR, "example"), (TEMPLATES_DIR, "template")]
        last_runs = self._core.workspace.metadata.last_runs()
        found: list[dict[str, Any]] = []
        for folder, origin in folders:
            if not folder.is_dir():
                continue
            files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SPEC_SUFFIXES]
            described = [_describe_cached(p, origin) for p in files]
            if origin == "mine":
                described.sort(key=lambda f: -f["modified"])
            else:
                described.sort(key=lambda f: f["name"].lower())
            for entry in described:
                entry["last_run"] = last_runs.get(entry["name"])
            found.extend(described)
        return found

    def delete(self, path: str | Path) -> None:
        """Delete one of the user's own pipeline files; the shipped ones, and files elsewhere, are
        refused (PermissionError, saying which folder may be deleted from)."""
        target = Path(path).resolve()
        mine = self.pipelines_dir.resolve()
        if target.parent != mine:
            raise PermissionError(f"{target}: only pipelines in {mine} can be deleted")
        target.unlink()

    def node_types(self) -> list[dict[str, Any]]:
        """Every node the palette offers: sources, transforms and destinations, each with its
        title, category, description, config JSON schema and input/output ports."""
        from engine.transforms import registry

        transforms = [_transform_type(cls) for _, cls in sorted(registry.all_types().items())]
        return [*_connector_types("source"), *transforms, *_connector_types("destination")]

    def transformations(self) -> list[dict[str, Any]]:
        """The transformations catalog: every transform type's description and config schema."""
        from engine.transforms import registry

        return [cls.describe() for _, cls in sorted(registry.all_types().items())]

    def open(self, path: str | Path) -> dict[str, Any]:
        """The document at `path` in graph form (a linear document is converted)."""
        return self.read(path)["document"]

    def folder(self) -> Path:
        """The user's pipelines folder, created if missing (the editor's file dialogs start there)."""
        self.pipelines_dir.mkdir(parents=True, exist_ok=True)
        return self.pipelines_dir

    def read(self, path: str | Path) -> dict[str, Any]:
        """{"document": the graph form, "form": "linear" | "graph" as the file had it, "shipped":
        whether it is one of the app's own examples or templates (read-only: saving makes a copy)}."""
        from engine.errors import SpecError
        from engine.spec.io import read_document
        from engine.spec.validate import form_of

        doc = read_document(path)
        shipped = Path(path).resolve().is_relative_to(RESOURCES_DIR)
        try:
            return {"document": to_graph_document(doc), "form": form_of(doc), "shipped": shipped}
        except SpecError:
            raise
        except Exception as exc:  # a linear document too broken to convert
            from engine.errors import SpecIssue

            raise SpecError(
                [SpecIssue("", f"cannot convert to graph form: {exc}")], source=str(path)
            ) from None

    def save(self, path: str | Path, doc: dict[str, Any]) -> int:
        """Write the graph form (with `layout`) atomically and record it as a pipeline version;
        returns the version number. An invalid document is saved too (work in progress)."""
        write_json_atomically(Path(path), doc)
        return self._core.workspace.metadata.save_pipeline_version(
            str(doc.get("name") or Path(path).stem), doc
        )

    def validate(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """Issues as {path, message, allowed, node_id}; empty when the document is valid."""
        return issues_of(doc)

    def load(self, path: str | Path) -> dict[str, Any]:
        """Read and check a spec file (`load_spec`)."""
        return load_spec(path)

    def templates(self, directory: str | Path | None = None) -> list[dict[str, Any]]:
        """The shipped pipeline templates: {name, title, path}."""
        out = []
        for path in sorted(Path(directory or TEMPLATES_DIR).glob("*.json")):
            try:
                title = json.loads(path.read_text(encoding="utf-8")).get("name") or path.stem
            except (OSError, ValueError):
                continue
            out.append({"name": path.stem, "title": title, "path": str(path)})
        return out

    def install_demo(self) -> dict[str, Any]:
        """Copy the user guide's e-commerce example (two shop exports and the pipeline) into
        <data dir>/demo/ecommerce, as `aggregator demo` does, with the last outputs removed; returns
        {"document", "spec_path"} for `runs.start(document, spec_path=...)`. Blocking."""
        from engine.examples import install_ecommerce_example

        spec = install_ecommerce_example(self._core.data_dir)
        return {"document": json.loads(spec.read_text(encoding="utf-8")), "spec_path": str(spec)}
