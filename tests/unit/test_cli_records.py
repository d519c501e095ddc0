"""The operator tools' views of the engine's private records (``bridge.cli._records``) are
state.proto's: every declared field has the number, name and type the engine writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from bridge.cli import _records

REPO = Path(__file__).resolve().parents[2]


def _state_proto(tmp_path: Path) -> dict[str, descriptor_pb2.DescriptorProto]:
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "state.pb"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO / 'schemas'}",
            f"-I{REPO / 'engine-rs' / 'proto'}",
            f"--descriptor_set_out={out}",
            "engine/v1/state.proto",
        ]
    )
    assert code == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (state,) = [f for f in files.file if f.name == "engine/v1/state.proto"]
    return {m.name: m for m in state.message_type}


@pytest.mark.parametrize(
    ("message", "declared"),
    [
        ("SessionRecord", _records.SESSION_FIELDS),
        ("OrderRecord", _records.ORDER_FIELDS),
        ("JournalEntry", _records.JOURNAL_ENTRY_FIELDS),
    ],
)
def test_declared_fields_are_the_engines(
    tmp_path: Path, message: str, declared: tuple[tuple[str, int, int, str], ...]
) -> None:
    fields = {f.number: f for f in _state_proto(tmp_path)[message].field}
    for name, number, kind, type_name in declared:
        real = fields[number]
        assert (real.name, real.type, real.type_name) == (name, kind, type_name)
    if message == "SessionRecord":  # the tools show every field of a session
        assert len(declared) == len(fields)


def test_records_round_trip() -> None:
    record = _records.SessionRecord(session_id="s1", grace_ms=3000, closed=True, lost=True)
    again = _records.SessionRecord.FromString(record.SerializeToString())
    assert (again.session_id, again.grace_ms, again.lost) == ("s1", 3000, True)
    order = _records.OrderRecord()
    order.order.session_id = "s1"
    order.status = 2
    assert _records.OrderRecord.FromString(order.SerializeToString()).order.session_id == "s1"
