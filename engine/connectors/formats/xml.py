"""XML: one element per record, streamed with iterparse both ways.

Reading, each record element becomes one row:
- a child element with text becomes a field named after its tag; nested elements become dotted
  names (`<customer><email>` -> `customer.email`); attributes become fields the same way
  (`<order id="1">` -> `id`, `<price currency="EUR">` -> `price.currency`);
- a dot inside a tag or attribute name is doubled (`<a.b>` -> `a..b`), so that it never collides with
  the nesting dot (`<a><b>` -> `a.b`);
- a name that repeats inside one record becomes a list of strings;
- every value is text (declare types in `schema`), and an empty element is null;
- namespaces are dropped from names.
`record_path` says which elements are records: `orders/order` (a path from the root), `//order`
or `order` (that tag at any depth). By default, the children of the root element are records.

Writing, `record_path` `orders/order` names the root and record elements (default
`records/record`; of a longer path, the first and last names are used); struct fields become nested elements, list items repeat the element, nulls are
left out and names that are not valid XML become valid (`unit price` -> `unit_price`). A dotted
column name is the reader's flattened form, so it is written back nested: `customer.email` as
`<customer><email>`, and `flow..rate` as `<flow.rate>`; reading the file gives the same names.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from engine.connectors.formats.common import ReadOptions, WriteOptions, to_text_frame
from engine.errors import ConnectorError, DataError


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _matcher(record_path: str | None):
    """A test on the stack of open tags (root first) saying whether the innermost is a record."""
    if not record_path:
        return lambda stack: len(stack) == 2
    path = record_path.strip()
    if path.startswith("//") or "/" not in path.strip("/"):
        tag = path.strip("/")
        return lambda stack: len(stack) > 1 and stack[-1] == tag
    parts = path.strip("/").split("/")
    return lambda stack: stack == parts


def _name(tag: str) -> str:
    """A tag or attribute as a field name: its dots doubled, as a single dot joins nested names."""
    return _local(tag).replace(".", "..")


def _flatten(element: ET.Element, prefix: str, out: dict) -> None:
    for name, value in element.attrib.items():
        _put(out, prefix + _name(name), value)
    for child in element:
        name = prefix + _name(child.tag)
        if len(child) or child.attrib:
            _flatten(child, name + ".", out)
        if not len(child):
            text = child.text if child.text and child.text.strip() else None
            if text is not None or not child.attrib:
                _put(out, name, text)


def _put(out: dict, name: str, value: str | None) -> None:
    if name not in out:
        out[name] = value
    elif isinstance(out[name], list):
        out[name].append(value)
    else:
        out[name] = [out[name], value]


def _frame(columns: dict[str, list], rows: int, lists: set[str]) -> pl.DataFrame:
    """One batch. A name once seen repeated stays a list in later batches too."""
    schema = {}
    for name, values in columns.items():
        values.extend([None] * (rows - len(values)))
        if name in lists or any(isinstance(v, list) for v in values):
            lists.add(name)
            columns[name] = [v if isinstance(v, list) or v is None else [v] for v in values]
            schema[name] = pl.List(pl.String)
        else:
            schema[name] = pl.String
    if not columns:  # records without any field: keep their count
        return pl.DataFrame({"_": [None] * rows}).drop("_")
    return pl.DataFrame(columns, schema=schema)


def read(path: Path, opts: ReadOptions, limit: int | None, batch_rows: int) -> Iterator[pl.DataFrame]:
    is_record = _matcher(opts.record_path)
    known: list[str] = []  # every column seen so far, so later batches keep the earlier columns
    lists: set[str] = set()
    columns: dict[str, list] = {}
    rows = total = 0
    stack: list[str] = []
    elements: list[ET.Element] = []
    try:
        for event, element in ET.iterparse(path, events=("start", "end")):
            if event == "start":
                stack.append(_local(element.tag))
                elements.append(element)
                continue
            if is_record(stack):
                record: dict = {}
                _flatten(element, "", record)
                if not len(element) and element.text and element.text.strip():
                    record[_name(stack[-1])] = element.text  # a leaf record: its own text
                for name, value in record.items():
                    column = columns.setdefault(name, [])
                    column.extend([None] * (rows - len(column)))  # records that lacked this field
                    column.append(value)
                    if name not in known:
                        known.append(name)
                rows += 1
                total += 1
                # Free the record: a huge file then needs memory for one batch only.
                element.clear()
                if len(elements) > 1:
                    elements[-2].remove(element)
                if rows == batch_rows or total == limit:
                    yield _frame({n: columns.get(n, []) for n in known}, rows, lists)
                    columns, rows = {}, 0
                    if total == limit:
                        return
            stack.pop()
            elements.pop()
    except ET.ParseError as exc:
        line, column = exc.position
        message = str(exc).split(":")[0]
        raise DataError(f"invalid XML: {message} at column {column + 1}", file=str(path), line=line) from None
    if rows:
        yield _frame({n: columns.get(n, []) for n in known}, rows, lists)


def locate(path: Path, opts: ReadOptions, row: int) -> dict:
    return {"record": row + 1}


# ---- writer -----------------------------------------------------------------------------------
_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")


def xml_name(name: str) -> str:
    name = _INVALID.sub("_", _local(name)) or "_"
    return "_" + name if not (name[0].isalpha() or name[0] == "_") or name.lower().startswith("xml") else name


def _escape(expr: pl.Expr) -> pl.Expr:
    # Control characters cannot appear in XML 1.0 at all; a carriage return would be normalised away.
    return (
        expr.str.replace_all(r"[\x00-\x08\x0B\x0C\x0E-\x1F]", "")
        .str.replace_all("&", "&amp;", literal=True)
        .str.replace_all("<", "&lt;", literal=True)
        .str.replace_all(">", "&gt;", literal=True)
        .str.replace_all("\r", "&#13;", literal=True)
    )


def _element(expr: pl.Expr, dtype: pl.DataType, name: str) -> pl.Expr:
    """`<name>value</name>` (or "" when null), built by Polars for the whole column at once."""
    tag = xml_name(name)
    if isinstance(dtype, pl.Struct):
        inner = [_element(expr.struct.field(f.name), f.dtype, f.name) for f in dtype.fields]
        body = pl.concat_str(inner, ignore_nulls=True) if inner else pl.lit("")
        return pl.when(expr.is_null()).then(pl.lit("")).otherwise(f"<{tag}>" + body + f"</{tag}>")
    if isinstance(dtype, pl.List):
        items = expr.list.eval(_element(pl.element(), dtype.inner, name)).list.join("")
        return items.fill_null("")
    text = expr.cast(pl.String) if dtype != pl.String else expr
    return (f"<{tag}>" + _escape(text) + f"</{tag}>").fill_null("")


def split_name(name: str) -> list[str]:
    """A flattened field name back into its element names: a single dot joins nested names, a
    doubled dot is a dot inside a name (`flow..rate.unit` -> `flow.rate`, `unit`)."""
    parts, current, i = [], "", 0
    while i < len(name):
        if name.startswith("..", i):
            current, i = current + ".", i + 2
        elif name[i] == "." and current:
            parts.append(current)
            current, i = "", i + 1
        else:
            current, i = current + name[i], i + 1
    return [*parts, current] if current else parts or [name]


def _nested_element(expr: pl.Expr, dtype: pl.DataType, name: str) -> pl.Expr:
    """`_element` under the parents a dotted name stands for (none when the value is null)."""
    *parents, leaf = split_name(name)
    body = _element(expr, dtype, leaf)
    for parent in reversed(parents):
        tag = xml_name(parent)
        body = pl.when(body == "").then(pl.lit("")).otherwise(f"<{tag}>" + body + f"</{tag}>")
    return body


class Writer:
    def __init__(self, temp: Path, opts: WriteOptions, target: Path, append: bool):
        parts = (opts.record_path or "records/record").strip("/").split("/")
        self.root = xml_name(parts[0] if len(parts) > 1 else "records")
        self.record = xml_name(parts[-1])
        self.temp = temp
        self.fh = open(temp, "wb")  # noqa: SIM115 - kept open across write() calls
        if append and target.exists() and target.stat().st_size > 0:
            self._copy_open_root(target)
        else:
            self.fh.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<{self.root}>\n'.encode())

    def _copy_open_root(self, target: Path) -> None:
        """Copy the existing document without its closing root tag, so new records continue it."""
        closing = f"</{self.root}>".encode()
        with open(target, "rb") as src:
            size = src.seek(0, os.SEEK_END)
            start = src.seek(max(0, size - 4096))
            tail = src.read().rstrip()
            if not tail.endswith(closing):
                raise ConnectorError(
                    f"{target}: cannot append, the document does not end with {closing.decode()}"
                )
            remaining = start + len(tail) - len(closing)
            src.seek(0)
            while remaining > 0 and (chunk := src.read(min(remaining, 1 << 20))):
                self.fh.write(chunk)
                remaining -= len(chunk)

    def write(self, batch: pl.DataFrame) -> None:
        if batch.height == 0 or batch.width == 0:
            return
        batch = to_text_frame(batch, nested_as_json=False)
        fields = [_nested_element(pl.col(c), t, c) for c, t in batch.schema.items()]
        line = pl.concat_str([pl.lit(f"  <{self.record}>"), *fields, pl.lit(f"</{self.record}>\n")])
        self.fh.write(batch.select(line.str.join("")).item().encode())

    def finish(self) -> None:
        self.fh.write(f"</{self.root}>\n".encode())
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def discard(self) -> None:
        self.fh.close()
        self.temp.unlink(missing_ok=True)
