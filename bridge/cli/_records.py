"""Read-only views of the engine's private records (``engine-rs/proto/engine/v1/state.proto``)
for the operator tools: a ``SessionRecord`` of the bucket ``bridge_sessions`` and the fields of an
``OrderRecord`` (bucket ``bridge_orders``) that say whether an order is live and which session
it names, and the header fields of a ``JournalEntry`` (stream JOURNAL: its writer's epoch).

The records are the engine's, not the contract's, so no generated module ships for them: the
messages are declared here, at runtime, with the field numbers and types of state.proto (fields
not declared are skipped when parsing). tests/unit/test_cli_records.py holds these declarations
to state.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bridge.v1 import orders_pb2

_F = descriptor_pb2.FieldDescriptorProto
_FILE = "bridge/cli/engine_records.proto"
_PACKAGE = "bridge.engine.v1"

SESSION_FIELDS: tuple[tuple[str, int, int, str], ...] = (
    ("session_id", 1, _F.TYPE_STRING, ""),
    ("grace_ms", 2, _F.TYPE_UINT32, ""),
    ("cancel_on_disconnect", 3, _F.TYPE_BOOL, ""),
    ("opened_at_unix_ns", 4, _F.TYPE_INT64, ""),
    ("signer", 5, _F.TYPE_STRING, ""),
    ("closed", 6, _F.TYPE_BOOL, ""),
    ("cancel_orders", 7, _F.TYPE_BOOL, ""),
    ("lost", 8, _F.TYPE_BOOL, ""),
    ("ended_at_unix_ns", 9, _F.TYPE_INT64, ""),
    ("engine_id", 10, _F.TYPE_STRING, ""),
)
"""SessionRecord: (name, number, type, message or enum type)."""

ORDER_FIELDS: tuple[tuple[str, int, int, str], ...] = (
    ("order", 1, _F.TYPE_MESSAGE, ".bridge.v1.NewOrder"),
    ("engine_order_id", 2, _F.TYPE_STRING, ""),
    ("engine_id", 3, _F.TYPE_STRING, ""),
    ("status", 5, _F.TYPE_ENUM, ".bridge.v1.OrderStatus"),
    ("last_report", 7, _F.TYPE_MESSAGE, ".bridge.v1.ExecutionReport"),
    ("tombstone", 10, _F.TYPE_BOOL, ""),
    ("alias_of", 12, _F.TYPE_STRING, ""),
)
"""The OrderRecord fields the tools read."""

JOURNAL_ENTRY_FIELDS: tuple[tuple[str, int, int, str], ...] = (
    ("engine_id", 1, _F.TYPE_STRING, ""),
    ("prev_stream_seq", 2, _F.TYPE_UINT64, ""),
    ("written_at_unix_ns", 5, _F.TYPE_INT64, ""),
    ("parts_after", 6, _F.TYPE_UINT32, ""),
    ("group_prev_seq", 7, _F.TYPE_UINT64, ""),
    ("epoch", 8, _F.TYPE_UINT64, ""),
)
"""The JournalEntry fields the tools read (stream JOURNAL; not its records and reports)."""


Fields = tuple[tuple[str, int, int, str], ...]


def _message(name: str, fields: Fields) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, type_name in fields:
        field = msg.field.add(name=field_name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
        if type_name:
            field.type_name = type_name
    return msg


def _classes() -> tuple[Any, Any, Any]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=_FILE,
            package=_PACKAGE,
            syntax="proto3",
            dependency=[orders_pb2.DESCRIPTOR.name],
        )
        proto.message_type.append(_message("SessionRecord", SESSION_FIELDS))
        proto.message_type.append(_message("OrderRecord", ORDER_FIELDS))
        proto.message_type.append(_message("JournalEntry", JOURNAL_ENTRY_FIELDS))
        pool.Add(proto)
    session = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.SessionRecord")
    )
    order = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.OrderRecord"))
    entry = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.JournalEntry"))
    return session, order, entry


SessionRecord, OrderRecord, JournalEntry = _classes()
