"""The Sparkplug B protobuf schema (Eclipse Tahu `sparkplug_b.proto`), built in code.

There is no `protoc` on the target machines, so the message descriptors are assembled from a
`FileDescriptorProto` at first use; the field numbers and types are those of the official schema
(proto2, package `org.eclipse.tahu.protobuf`), so payloads are wire-compatible with every
Sparkplug B implementation. Extensions are left out: a decoder skips unknown fields anyway.
"""

from __future__ import annotations

from functools import cache
from typing import Any

PACKAGE = "org.eclipse.tahu.protobuf"

# (name, number, type, label, type_name or None, oneof index or None)
_VALUE_FIELDS = (
    ("int_value", "uint32"),
    ("long_value", "uint64"),
    ("float_value", "float"),
    ("double_value", "double"),
    ("boolean_value", "bool"),
    ("string_value", "string"),
)


def _messages() -> dict[str, tuple[list[tuple], list[str]]]:
    """Message name -> (fields, oneof names). Field: (name, number, type, repeated, type_name, oneof)."""
    p = ".".join(("", PACKAGE, "Payload"))

    def values(first: int) -> list[tuple]:
        return [(n, first + i, t, False, None, 0) for i, (n, t) in enumerate(_VALUE_FIELDS)]

    return {
        "Payload": (
            [
                ("timestamp", 1, "uint64", False, None, None),
                ("metrics", 2, "message", True, f"{p}.Metric", None),
                ("seq", 3, "uint64", False, None, None),
                ("uuid", 4, "string", False, None, None),
                ("body", 5, "bytes", False, None, None),
            ],
            [],
        ),
        "Payload.Template": (
            [
                ("version", 1, "string", False, None, None),
                ("metrics", 2, "message", True, f"{p}.Metric", None),
                ("parameters", 3, "message", True, f"{p}.Template.Parameter", None),
                ("template_ref", 4, "string", False, None, None),
                ("is_definition", 5, "bool", False, None, None),
            ],
            [],
        ),
        "Payload.Template.Parameter": (
            [("name", 1, "string", False, None, None), ("type", 2, "uint32", False, None, None), *values(3)],
            ["value"],
        ),
        "Payload.DataSet": (
            [
                ("num_of_columns", 1, "uint64", False, None, None),
                ("columns", 2, "string", True, None, None),
                ("types", 3, "uint32", True, None, None),
                ("rows", 4, "message", True, f"{p}.DataSet.Row", None),
            ],
            [],
        ),
        "Payload.DataSet.DataSetValue": (values(1), ["value"]),
        "Payload.DataSet.Row": ([("elements", 1, "message", True, f"{p}.DataSet.DataSetValue", None)], []),
        "Payload.PropertyValue": (
            [
                ("type", 1, "uint32", False, None, None),
                ("is_null", 2, "bool", False, None, None),
                *values(3),
                ("propertyset_value", 9, "message", False, f"{p}.PropertySet", 0),
                ("propertysets_value", 10, "message", False, f"{p}.PropertySetList", 0),
            ],
            ["value"],
        ),
        "Payload.PropertySet": (
            [
                ("keys", 1, "string", True, None, None),
                ("values", 2, "message", True, f"{p}.PropertyValue", None),
            ],
            [],
        ),
        "Payload.PropertySetList": ([("propertyset", 1, "message", True, f"{p}.PropertySet", None)], []),
        "Payload.MetaData": (
            [
                ("is_multi_part", 1, "bool", False, None, None),
                ("content_type", 2, "string", False, None, None),
                ("size", 3, "uint64", False, None, None),
                ("seq", 4, "uint64", False, None, None),
                ("file_name", 5, "string", False, None, None),
                ("file_type", 6, "string", False, None, None),
                ("md5", 7, "string", False, None, None),
                ("description", 8, "string", False, None, None),
            ],
            [],
        ),
        "Payload.Metric": (
            [
                ("name", 1, "string", False, None, None),
                ("alias", 2, "uint64", False, None, None),
                ("timestamp", 3, "uint64", False, None, None),
                ("datatype", 4, "uint32", False, None, None),
                ("is_historical", 5, "bool", False, None, None),
                ("is_transient", 6, "bool", False, None, None),
                ("is_null", 7, "bool", False, None, None),
                ("metadata", 8, "message", False, f"{p}.MetaData", None),
                ("properties", 9, "message", False, f"{p}.PropertySet", None),
                *[(n, 10 + i, t, False, None, 0) for i, (n, t) in enumerate(_VALUE_FIELDS)],
                ("bytes_value", 16, "bytes", False, None, 0),
                ("dataset_value", 17, "message", False, f"{p}.DataSet", 0),
                ("template_value", 18, "message", False, f"{p}.Template", 0),
            ],
            ["value"],
        ),
    }


@cache
def payload_class() -> Any:
    """The generated `Payload` message class (built once, on first use)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="sparkplug_b_runtime.proto", package=PACKAGE, syntax="proto2"
    )
    F = descriptor_pb2.FieldDescriptorProto
    protos: dict[str, Any] = {}
    for full_name, (fields, oneofs) in _messages().items():
        *parents, short = full_name.split(".")
        container = protos[".".join(parents)].nested_type if parents else fdp.message_type
        msg = container.add(name=short)
        protos[full_name] = msg
        for oneof in oneofs:
            msg.oneof_decl.add(name=oneof)
        for name, number, ftype, repeated, type_name, oneof in fields:
            field = msg.field.add(
                name=name,
                number=number,
                type=getattr(F, f"TYPE_{ftype.upper()}"),
                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
            )
            if type_name:
                field.type_name = type_name
            if oneof is not None:
                field.oneof_index = oneof
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))
