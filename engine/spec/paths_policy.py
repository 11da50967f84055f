"""What a spec may name on disk (issue 14, item 5): file paths only inside the allowed roots, plugins
only when an admin has enabled them. Checked at validation, on every call (the settings can change
while a compiled Plan is cached), before anything reads a source: a spec from someone else cannot
make the engine open, or report the schema of, a file outside the roots.

The roots: the default data directory, the data directories this process has opened, and the folders an
admin lists in the settings file's `allowed_roots` (engine/datadir.py). A path is resolved first
(symbolic links followed, `..` collapsed), relative paths against the spec's folder, and the
result must lie in a root. Without a run context (a spec saved through the API, a folder of specs
the service loads) the spec's folder is not known yet: a relative path is then checked by the run
(and the preview), which validate again with it.

Every place a spec names a file: the `file` connector's `path` (a glob: its fixed part), `sqlite`'s
`path`, `duckdb`'s `database`, the certificate and key files of the TLS options of any connector
(`ca_file`, `cert_file`, `key_file`, `creds_file`, `ssl_ca`, `ssl_ca_location`, OPC UA's
`certificate`, `private_key`, `server_certificate`), the `file_arrival` schedule's `path` and the
SMTP settings' `ca_file`. An S3 `path` is an object key, not a file here.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.errors import SpecIssue

# config keys that name a file for one connector type only (elsewhere the same key means another thing)
TYPED_KEYS = {"file": ("path",), "sqlite": ("path",), "duckdb": ("database",)}
# config keys that name a file wherever they appear (TLS material), at any depth of a config
FILE_KEYS = frozenset(
    {
        "ca_file",
        "cert_file",
        "key_file",
        "creds_file",
        "ssl_ca",
        "ssl_ca_location",
        "certificate",
        "private_key",
        "server_certificate",
    }
)
HOW_TO_ADD = "an admin adds a folder with `aggregator settings add allowed_roots DIR`"
PLUGINS_OFF = (
    "plugins are disabled: {what} load only from the data directory's plugins/ folder, and only"
    " after an admin enables them (`aggregator settings set plugins_enabled true`)"
)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:  # a loop of symbolic links: what it says, made absolute
        return Path(os.path.abspath(path))


def allowed_roots() -> list[Path]:
    """The folders a spec may name files in, resolved (symbolic links followed): the default data
    directory, those this process opened (engine/workspace.py notes them) and the admin's."""
    from engine.datadir import default_data_dir, opened_data_dirs, security_settings

    roots = [default_data_dir(), *opened_data_dirs(), *security_settings()["allowed_roots"]]
    out: list[Path] = []
    for root in roots:
        real = _real(Path(root).expanduser())
        if real not in out:
            out.append(real)
    return out


SHOWN_ROOTS = 4  # an error names at most this many allowed folders (a service may have opened many)


def shown_roots(roots: list[Path]) -> str:
    """The allowed folders for an error's `allowed`: the admin's first, at most SHOWN_ROOTS."""
    from engine.datadir import security_settings

    admin = [_real(Path(r).expanduser()) for r in security_settings()["allowed_roots"]]
    ordered = [r for r in admin if r in roots] + [r for r in roots if r not in admin]
    more = len(ordered) - SHOWN_ROOTS
    text = ", ".join(str(r) for r in ordered[:SHOWN_ROOTS])
    return text + (f" and {more} more (`aggregator settings show`)" if more > 0 else "")


def plugins_enabled() -> bool:
    from engine.datadir import security_settings

    return bool(security_settings()["plugins_enabled"])


def fixed_part(pattern: str) -> str:
    """The part of a glob before its first wildcard (`data/*/x.csv` -> `data`)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def confine(value: str, base_dir: Path | None, roots: list[Path], *, pattern: bool = False) -> str | None:
    """None when `value` lies inside a root; else the one-line reason. `base_dir` None: the spec's
    folder is not known, and a relative path is left to the run, which knows it."""
    text = value.strip()
    if not text:
        return None
    if pattern and ".." in Path(text).parts[len(Path(fixed_part(text)).parts) :]:
        return f"{value}: '..' after a wildcard is not allowed"
    target = Path(fixed_part(text) if pattern else text).expanduser()
    if not target.is_absolute():
        if base_dir is None:  # checked when the spec's folder is known (its run, its preview)
            return None
        target = base_dir / target
    real = _real(target)
    if any(real == root or real.is_relative_to(root) for root in roots):
        return None
    via = f" (it resolves to {real})" if str(real) != os.path.normpath(str(target)) else ""
    return f"{value}{via} is outside the allowed folders; {HOW_TO_ADD}"


def _file_values(config: Any, where: str) -> Iterator[tuple[str, str]]:
    """(JSON path, text) of every TLS file key at any depth of a config."""
    if isinstance(config, dict):
        for key, value in config.items():
            here = f"{where}.{key}"
            if key in FILE_KEYS and isinstance(value, str):
                yield here, value
            else:
                yield from _file_values(value, here)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from _file_values(value, f"{where}[{i}]")


def endpoint_files(ctype: str, kind: str, config: Any, base: str) -> Iterator[tuple[str, str, bool]]:
    """(JSON path, the text, is a glob) of every file one connector's config names."""
    if not isinstance(config, dict):
        return
    for key in TYPED_KEYS.get(ctype, ()):
        value = config.get(key)
        if isinstance(value, str):  # a {"secret": NAME} path is known only at run time
            yield f"{base}.{key}", value, ctype == "file" and kind == "source"
    yield from ((p, v, False) for p, v in _file_values(config, base))


def named_files(plan: Any) -> Iterator[tuple[str, str, bool]]:
    """(JSON path, the text, is a glob) of every file the Plan's spec names."""
    for node in plan.graph.nodes:
        if node.kind == "transform":
            continue
        base = f"{plan.paths.get(node.id, '')}.config"
        yield from endpoint_files(node.connector_type or "", node.kind, node.config or {}, base)
    schedule = plan.graph.schedule
    if getattr(schedule, "type", None) == "file_arrival":
        yield "schedule.path", schedule.path, True
    notifications = plan.graph.error_handling.notifications
    smtp = notifications.smtp if notifications is not None else None
    if smtp is not None and smtp.ca_file:
        yield "error_handling.notifications.smtp.ca_file", smtp.ca_file, False


def plugin_places(plan: Any) -> Iterator[tuple[str, str]]:
    """(JSON path, what) of every node that would load a plugin."""
    for node in plan.graph.nodes:
        base = plan.paths.get(node.id, "")
        if node.kind == "transform" and (node.transform or {}).get("type") == "python":
            inner = f"{base}.transform" if plan.form == "graph" else base
            yield f"{inner}.function", "python transforms"
        elif node.kind != "transform" and node.connector_type == "custom":
            yield f"{base}.config.implementation", "custom connectors"


def check_plan(plan: Any, ctx: Any = None) -> list[SpecIssue]:
    """Every file outside the allowed roots, and every plugin while plugins are off."""
    issues: list[SpecIssue] = []
    if not plugins_enabled():
        issues += [SpecIssue(path, PLUGINS_OFF.format(what=what)) for path, what in plugin_places(plan)]
    files = list(named_files(plan))
    if not files:
        return issues
    # the run context's data_dir is not a root of its own: a context built without one says the
    # working folder. The data directories in use are those the process opened.
    base_dir = getattr(ctx, "base_dir", None) if ctx is not None else None
    roots = allowed_roots()
    shown = shown_roots(roots)
    for path, value, pattern in files:
        reason = confine(value, Path(base_dir) if base_dir else None, roots, pattern=pattern)
        if reason is not None:
            issues.append(SpecIssue(path, reason, shown))
    return issues


def check_endpoint(ctype: str, role: str, config: Any, base_dir: Path | None = None) -> list[SpecIssue]:
    """The same rules for one connector's config (a saved connector, a connection test); paths
    `.config.<field>`. `base_dir`: where its relative paths resolve (None: not known yet)."""
    issues: list[SpecIssue] = []
    if ctype == "custom" and not plugins_enabled():
        issues.append(SpecIssue(".config.implementation", PLUGINS_OFF.format(what="custom connectors")))
    files = list(endpoint_files(ctype, role, config, ".config"))
    if files:
        roots = allowed_roots()
        shown = shown_roots(roots)
        for path, value, pattern in files:
            reason = confine(value, base_dir, roots, pattern=pattern)
            if reason is not None:
                issues.append(SpecIssue(path, reason, shown))
    return issues
