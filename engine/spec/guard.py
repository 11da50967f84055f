"""Reading a pipeline document that may be hostile: the limits of `engine.limits`, enforced.

`load_json` and `load_yaml` parse text into plain JSON-like values without ever recursing deeply,
expanding YAML aliases without bound, accepting duplicate keys or converting a 5,000-digit number;
`check_values` walks a parsed document (iteratively) for what the parsers cannot see: nesting,
lone surrogates and huge whole numbers. Every problem is a SpecIssue located by JSON path (or by
line, for YAML syntax), so the CLI prints one line and exits 2.
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.errors import SpecIssue
from engine.limits import (
    MAX_INTEGER_DIGITS,
    MAX_NESTING,
    MAX_REPORTED_ISSUES,
    MAX_VALUES,
    shorten,
)

_SURROGATE = re.compile("[\ud800-\udfff]")
_TOO_BIG = 10**MAX_INTEGER_DIGITS  # the smallest whole number with one digit too many


class _Duplicates(dict):
    """A JSON object that repeated a key: the parser's result, marked for `check_values`."""

    duplicates: list[str]


class _LongInteger:
    """A whole number with too many digits, kept as its text for the error."""

    def __init__(self, text: str):
        self.text = text


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    marked = _Duplicates(out)
    seen: set[str] = set()
    marked.duplicates = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
    return marked


def _integer(text: str) -> int | _LongInteger:
    return int(text) if len(text.lstrip("-")) <= MAX_INTEGER_DIGITS else _LongInteger(text)


def load_json(text: str) -> tuple[Any, list[SpecIssue]]:
    """Parse JSON text; raises json.JSONDecodeError for syntax, returns (document, limit issues)."""
    try:
        doc = json.loads(text, object_pairs_hook=_object, parse_int=_integer)
    except RecursionError:
        return None, [_deep_json(text)]
    return doc, check_values(doc)


# ---- the walk --------------------------------------------------------------------------------
def join(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = shorten(key, 40)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", key):
        key = json.dumps(key, ensure_ascii=False)
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _path(chain: tuple | None) -> str:
    parts = []
    while chain is not None:
        chain, key = chain
        parts.append(key)
    path = ""
    for key in reversed(parts):
        path = join(path, key)
    return path


def check_values(doc: Any) -> list[SpecIssue]:
    """Every limit problem in a parsed document, each with its JSON path (at most a hundred)."""
    issues: list[SpecIssue] = []
    # (value, depth of the container holding it, path as a linked chain: built only on error)
    stack: list[tuple[Any, int, tuple | None]] = [(doc, 0, None)]
    count = 0
    while stack:
        value, depth, chain = stack.pop()
        count += 1
        if count > MAX_VALUES:
            issues.append(SpecIssue("", f"a document holds at most {MAX_VALUES:,} values"))
            break
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                issues.append(_surrogate(_path(chain), value))
        elif isinstance(value, dict | list):
            if depth + 1 > MAX_NESTING:
                issues.append(
                    SpecIssue(
                        shorten(_path(chain)), f"nested more than {MAX_NESTING} levels deep (the limit)"
                    )
                )
            elif isinstance(value, dict):
                for key in getattr(value, "duplicates", ()):
                    issues.append(
                        SpecIssue(
                            join(_path(chain), key), f"duplicate key '{shorten(key)}' (keys are unique)"
                        )
                    )
                children = []
                for key, item in value.items():
                    if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                        issues.append(_surrogate(_path(chain), key))
                        continue
                    children.append((item, depth + 1, (chain, key)))
                stack.extend(reversed(children))  # popped in document order
            else:
                stack.extend((value[i], depth + 1, (chain, i)) for i in range(len(value) - 1, -1, -1))
        elif isinstance(value, _LongInteger) or (
            isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _TOO_BIG
        ):
            what = (
                f"{len(value.text.lstrip('-')):,} digits"
                if isinstance(value, _LongInteger)
                else f"more than {MAX_INTEGER_DIGITS} digits"
            )
            issues.append(
                SpecIssue(
                    _path(chain),
                    f"a whole number of {what}; at most {MAX_INTEGER_DIGITS} digits are allowed",
                )
            )
        if len(issues) > MAX_REPORTED_ISSUES:
            issues[MAX_REPORTED_ISSUES:] = [SpecIssue("", "more problems not shown")]
            break
    return issues


def _surrogate(path: str, text: str) -> SpecIssue:
    char = _SURROGATE.search(text).group(0)  # type: ignore[union-attr]
    return SpecIssue(
        path,
        f"'{shorten(text)}' holds a lone surrogate (U+{ord(char):04X}); text must be valid Unicode",
    )


# ---- JSON too deep for the parser ------------------------------------------------------------
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]')


def _deep_json(text: str) -> SpecIssue:
    """Where a JSON document first nests deeper than the limit (its path and line), by a scan that
    keeps only the path (no values)."""
    stack: list[list[Any]] = []  # per open container: [kind, current key or index]
    last_string: str | None = None
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token[0] == '"':
            last_string = token
            continue
        if token in "[{":
            if len(stack) + 1 > MAX_NESTING:
                line = text.count("\n", 0, match.start()) + 1
                path = ""
                for _, key in stack:
                    path = join(path, key)
                return SpecIssue(
                    shorten(path),
                    f"nested more than {MAX_NESTING} levels deep (the limit), at line {line}",
                )
            stack.append(["{", None] if token == "{" else ["[", 0])
        elif token in "]}":
            if stack:
                stack.pop()
        elif token == ":" and stack and last_string is not None:
            try:
                stack[-1][1] = json.loads(last_string)
            except ValueError:
                stack[-1][1] = last_string.strip('"')
        elif token == "," and stack and stack[-1][0] == "[":
            stack[-1][1] += 1
    return SpecIssue("", f"nested more than {MAX_NESTING} levels deep (the limit)")


# ---- YAML ------------------------------------------------------------------------------------
def load_yaml(text: str) -> tuple[Any, list[SpecIssue]]:
    """Parse YAML text safely; raises yaml.YAMLError (marked with a line) for syntax and limits."""
    import yaml  # only YAML documents pay for it

    doc = yaml.load(text, Loader=_yaml_loader())
    return doc, check_values(doc)


_LOADER: Any = None


def _yaml_loader() -> Any:
    global _LOADER
    if _LOADER is None:
        _LOADER = _make_loader()
    return _LOADER


def _make_loader() -> Any:
    import yaml
    from yaml.constructor import ConstructorError
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    merge_tag = "tag:yaml.org,2002:merge"

    class GuardedLoader(yaml.SafeLoader):
        """SafeLoader with the document limits: nesting, expansion of aliases, duplicate keys and
        the digits of a whole number."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            nested = isinstance(event, yaml.CollectionStartEvent)
            if nested and self._depth + 1 > MAX_NESTING:
                raise ConstructorError(
                    None, None, f"nested more than {MAX_NESTING} levels deep (the limit)", event.start_mark
                )
            self._depth += nested
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= nested

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, TypeError, OverflowError) as exc:  # e.g. the date 2024-02-30
                raise ConstructorError(
                    None, None, f"cannot read this value: {shorten(str(exc), 200)}", node.start_mark
                ) from None

        def construct_document(self, node: Any) -> Any:
            _check_expansion(node)
            return super().construct_document(node)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if not isinstance(key_node, ScalarNode) or key_node.tag == merge_tag:
                        continue
                    key = self.construct_object(key_node)
                    try:
                        fresh = key not in seen
                    except TypeError:
                        continue  # reported by SafeLoader as an unhashable key
                    if not fresh:
                        raise ConstructorError(
                            "while reading a mapping",
                            node.start_mark,
                            f"duplicate key '{shorten(key)}' (keys are unique)",
                            key_node.start_mark,
                        )
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            digits = sum(ch.isdigit() for ch in str(node.value))
            if digits > MAX_INTEGER_DIGITS:
                raise ConstructorError(
                    None,
                    None,
                    f"a whole number of {digits:,} digits; at most {MAX_INTEGER_DIGITS} digits are allowed",
                    node.start_mark,
                )
            return super().construct_yaml_int(node)

    GuardedLoader.add_constructor("tag:yaml.org,2002:int", GuardedLoader.construct_yaml_int)

    def _check_expansion(root: Any) -> None:
        """Count the values the document would have once every alias is expanded, sharing the
        count of each node (so this is linear in the text); refuse more than MAX_VALUES and any
        alias that contains itself."""
        sizes: dict[int, int] = {}
        open_nodes: set[int] = set()
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            key = id(node)
            if isinstance(node, ScalarNode):
                sizes[key] = 1
                continue
            children = (
                node.value
                if isinstance(node, SequenceNode)
                else [part for pair in node.value for part in pair]
            )
            if done:
                open_nodes.discard(key)
                total = 1 + sum(sizes[id(child)] for child in children)
                if total > MAX_VALUES:
                    raise ConstructorError(
                        None,
                        None,
                        f"aliases expand this to more than {MAX_VALUES:,} values (the limit)",
                        node.start_mark,
                    )
                sizes[key] = total
                continue
            if key in sizes:
                continue
            open_nodes.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise ConstructorError(
                        None, None, "an alias refers to a node that contains it", node.start_mark
                    )
                if id(child) not in sizes:
                    stack.append((child, False))

    return GuardedLoader
