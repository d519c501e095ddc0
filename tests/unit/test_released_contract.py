"""Contract 1.0, frozen (schemas/released/v1.0): its protos, generated Python and golden vectors.

* The frozen ``.proto`` files and vectors are byte for byte those of 1.0's release commit
  (SHA-256 below; and ``git show`` of the commit when this clone has it).
* The frozen generated Python is what ``scripts/gen_proto.py`` makes of the frozen protos.
* The current Python decodes every 1.0 vector to the same message (re-encoding gives the very
  bytes back), and so does 1.0's generated Python: the same fields and values
  (engine-rs/tests/golden.rs does the same with prost).
* A 1.1 message with the fields and enum values 1.1 added decodes under 1.0's generated Python:
  the fields 1.0 knows read the same, and the rest survives a re-encoding (protobuf's unknown
  fields), so the current Python reads the whole 1.1 message back.

1.0's generated modules run in a subprocess (``PYTHONPATH`` = the frozen ``python/`` dir): they
register the same full names as the current ones in protobuf's one descriptor pool, so two
contract versions cannot share a process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from bridge import contract
from bridge.v1 import common_pb2, orders_pb2

REPO = Path(__file__).resolve().parents[2]
RELEASED = REPO / "schemas" / "released" / "v1.0"
RELEASED_PYTHON = RELEASED / "python"
RELEASED_TESTDATA = RELEASED / "testdata"
RELEASE_COMMIT = "9c8e34f8df8b893c6b49967e841d836073864158"
"""Contract 1.0's release commit (bridge_dev.compat.RELEASED_COMMIT)."""

FROZEN_SHA256 = {
    "bridge/v1/common.proto": "a5e4286767eafde807265e557410ed7ecb46401f23d00c8f38a92bf28ce675b4",
    "bridge/v1/market_data.proto": (
        "d727f37eec4036a27ac6cfd40777a56270912a2fe514b42a4271911ac293a449"
    ),
    "bridge/v1/orders.proto": "b4d12f8b74b4625ce72d72ff7c2cb1c3b927a151dbffd19f58c643189c34bc6b",
    "bridge/v1/security.proto": "d9a661c065afddb67c345abc4e4839add2162bff120156cbacf21fe977562d99",
    "cancel_request": "ef9f5e7ceb740bcc72f69d1d58221aee9468e259e9996b818f01411713537517",
    "execution_report_trade": "bcfe6824f165ea6db3664f61f995365a606c1ee05d93c0f9b052f3f54f145747",
    "new_order_limit": "90c9726c7d1cec34a42c37ef387331fc36c23d739f8b5d234d7cd874410ebb2b",
    "new_order_market_minimal": "949dfa89983ea78420c3fee03ac0e0661e880ad709e7b9c33d6689ab5427f4fa",
    "order_ack_rejected": "7e4514d9b3ee662e3e459898e80524a770d598358946cf7f7e9379d54970f6b3",
    "order_status_reply": "99bc61d5519d1265ede4a935ea239db40b88d02d9606d4176f0b4cf438a3b09c",
    "order_status_request": "ef9f5e7ceb740bcc72f69d1d58221aee9468e259e9996b818f01411713537517",
}
"""SHA-256 of each frozen file (a vector's ``.py.bin`` and ``.rs.bin`` are the same bytes)."""

VECTOR_TYPES = {
    "cancel_request": "CancelRequest",
    "execution_report_trade": "ExecutionReport",
    "new_order_limit": "NewOrder",
    "new_order_market_minimal": "NewOrder",
    "order_ack_rejected": "OrderAck",
    "order_status_reply": "OrderStatusReply",
    "order_status_request": "OrderStatusRequest",
}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_GEN_PROTO = _load("_gen_proto_released", REPO / "scripts" / "gen_proto.py")
BUILDERS: dict[str, Callable[[], Message]] = _load(
    "_gen_golden_released", REPO / "scripts" / "gen_golden.py"
).BUILDERS


def _git_show(path: str) -> bytes | None:
    """The file at the release commit, or None when this clone does not have the commit."""
    try:
        done = subprocess.run(
            ["git", "show", f"{RELEASE_COMMIT}:{path}"],
            cwd=REPO,
            capture_output=True,
            check=False,
            timeout=30,
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def _vector(name: str, encoder: str = "py") -> bytes:
    return (RELEASED_TESTDATA / f"{name}.{encoder}.bin").read_bytes()


# --- frozen bytes ---------------------------------------------------------------------------


def test_the_frozen_protos_are_the_release_commits() -> None:
    protos = sorted(p.relative_to(RELEASED).as_posix() for p in RELEASED.glob("bridge/**/*.proto"))
    assert protos == sorted(k for k in FROZEN_SHA256 if k.endswith(".proto"))
    for path in protos:
        data = (RELEASED / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == FROZEN_SHA256[path], path
        at_release = _git_show(f"schemas/{path}")
        if at_release is not None:
            assert data == at_release, path


def test_the_frozen_vectors_are_the_release_commits() -> None:
    files = sorted(p.name for p in RELEASED_TESTDATA.glob("*.bin"))
    assert files == sorted(f"{n}.{e}.bin" for n in VECTOR_TYPES for e in ("py", "rs"))
    for name in VECTOR_TYPES:
        for encoder in ("py", "rs"):
            data = _vector(name, encoder)
            assert hashlib.sha256(data).hexdigest() == FROZEN_SHA256[name], name
            at_release = _git_show(f"schemas/testdata/{name}.{encoder}.bin")
            if at_release is not None:
                assert data == at_release, name
            # A vector of a released message version never changes (schemas/testdata/README.md).
            assert (REPO / "schemas" / "testdata" / f"{name}.{encoder}.bin").read_bytes() == data


def test_the_frozen_generated_python_is_current(tmp_path: Path) -> None:
    """Regenerating from the frozen protos yields the committed frozen modules, byte for byte
    (and they are what release 1.0 shipped as bridge/v1)."""
    _GEN_PROTO.generate(tmp_path, RELEASED)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "bridge" / "v1").glob("*_pb2.py*")}
    frozen_dir = RELEASED_PYTHON / "bridge" / "v1"
    committed = {p.name: p.read_bytes() for p in frozen_dir.glob("*_pb2.py*")}
    assert fresh
    assert fresh == committed, (
        "stale: run `python scripts/gen_proto.py --schemas schemas/released/v1.0 "
        "--out schemas/released/v1.0/python` (the frozen protos must not change)"
    )
    for name, data in committed.items():
        at_release = _git_show(f"bridge/v1/{name}")
        if at_release is not None:
            assert data == at_release, name


# --- decoding 1.0 bytes ---------------------------------------------------------------------


def test_the_current_python_decodes_every_frozen_vector() -> None:
    for name, type_name in VECTOR_TYPES.items():
        expected = BUILDERS[name]()
        assert type(expected).__name__ == type_name
        for encoder in ("py", "rs"):
            decoded = type(expected).FromString(_vector(name, encoder))
            assert decoded == expected, f"{name}.{encoder}"
            assert decoded.SerializeToString(deterministic=True) == _vector(name, "py"), name


_RELEASED_READER = """
import json, sys
from google.protobuf import json_format
import bridge
from bridge.v1 import common_pb2, orders_pb2

out = {"bridge": bridge.__file__, "fields": {}, "messages": {}}
for module in (common_pb2, orders_pb2):
    for message in module.DESCRIPTOR.message_types_by_name.values():
        out["fields"][message.full_name] = sorted(message.fields_by_name)
for item in json.load(sys.stdin):
    msg = getattr(orders_pb2, item["type"]).FromString(bytes.fromhex(item["hex"]))
    out["messages"][item["name"]] = {
        "fields": json_format.MessageToDict(
            msg, preserving_proto_field_name=True, use_integers_for_enums=True
        ),
        "again": msg.SerializeToString(deterministic=True).hex(),
    }
json.dump(out, sys.stdout)
"""


def released_python(messages: dict[str, Message], tmp_path: Path) -> dict[str, Any]:
    """Decode ``messages`` (serialized) with 1.0's generated Python in a process of its own:
    what it read (``fields``, enums as numbers), its re-encoding (``again``), and the field
    names 1.0 knows per message type."""
    script = tmp_path / "released_reader.py"
    script.write_text(_RELEASED_READER, "utf-8")
    request = [
        {"name": n, "type": type(m).__name__, "hex": m.SerializeToString().hex()}
        for n, m in messages.items()
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(RELEASED_PYTHON)
    done = subprocess.run(
        [sys.executable, "-P", str(script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    assert Path(out["bridge"]).is_relative_to(RELEASED_PYTHON), out["bridge"]
    return out


def _as_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, use_integers_for_enums=True
    )


def _only_known(msg: Message, known: dict[str, list[str]]) -> Message:
    """A copy of ``msg`` without the fields 1.0 does not know (``known``: names per type)."""
    copy = type(msg)()
    copy.CopyFrom(msg)

    def strip(m: Message) -> None:
        names = set(known[m.DESCRIPTOR.full_name])
        for field, value in m.ListFields():
            if field.name not in names:
                m.ClearField(field.name)
            elif isinstance(value, Message):  # a singular message field (not a map or list)
                strip(value)

    strip(copy)
    return copy


def test_the_released_python_decodes_every_frozen_vector_the_same(tmp_path: Path) -> None:
    current = {name: type(BUILDERS[name]()).FromString(_vector(name)) for name in VECTOR_TYPES}
    out = released_python(current, tmp_path)
    for name, msg in current.items():
        assert out["messages"][name]["fields"] == _as_dict(msg), name
        assert bytes.fromhex(out["messages"][name]["again"]) == _vector(name), name


# --- 1.1 messages under 1.0 -----------------------------------------------------------------


def _dec(units: int, scale: int) -> common_pb2.Decimal:
    return common_pb2.Decimal(units=units, scale=scale)


def messages_of_1_1() -> dict[str, Message]:
    """1.1 messages with every field and enum value 1.1 added to a 1.0 message."""
    report = orders_pb2.ExecutionReport(
        exec_id="e1-1-3",
        engine_order_id="e1-1",
        client_order_id="ord-0001-r1",
        orig_client_order_id="ord-0001",
        account="acct-1",
        symbol="ACME",
        side=orders_pb2.SIDE_BUY,
        exec_type=orders_pb2.EXEC_TYPE_REPLACED,
        order_status=orders_pb2.ORDER_STATUS_PENDING_REPLACE,
        order_qty=_dec(7, 1),
        leaves_qty=_dec(5, 1),
        cum_qty=_dec(2, 1),
        price=_dec(10150, 2),
        reason=orders_pb2.REJECT_REASON_MASS_CANCELED,
        seq=3,
        engine_id="e1",
        tags={"desk": "alpha"},
    )
    return {
        "new_order": orders_pb2.NewOrder(
            client_order_id="ord-0001",
            account="acct-1",
            symbol="ACME",
            side=orders_pb2.SIDE_BUY,
            order_type=orders_pb2.ORDER_TYPE_LIMIT,
            quantity=_dec(5, 1),
            limit_price=_dec(10125, 2),
            time_in_force=orders_pb2.TIME_IN_FORCE_GTC,
            session_id="s-1",
        ),
        "ack": orders_pb2.OrderAck(
            client_order_id="ord-0001-r1",
            orig_client_order_id="ord-0001",
            account="acct-1",
            status=orders_pb2.ACK_STATUS_REJECTED,
            reason=orders_pb2.REJECT_REASON_UNSUPPORTED_VERSION,
            field_errors=[
                common_pb2.FieldError(
                    field=contract.HEADER_SCHEMA_VERSION, rule="supported_major", message="2.0"
                )
            ],
            order_status=orders_pb2.ORDER_STATUS_PENDING_REPLACE,
        ),
        "report": report,
        "status_reply": orders_pb2.OrderStatusReply(
            found=True,
            last_report=report,
            order_status=orders_pb2.ORDER_STATUS_PENDING_REPLACE,
        ),
    }


def test_1_1_messages_decode_under_1_0_and_keep_what_it_does_not_know(tmp_path: Path) -> None:
    sent = messages_of_1_1()
    out = released_python(sent, tmp_path)
    known: dict[str, list[str]] = out["fields"]
    # 1.0 lacks these fields: they are 1.1's.
    assert "session_id" not in known["bridge.v1.NewOrder"]
    assert "orig_client_order_id" not in known["bridge.v1.OrderAck"]
    assert {"price", "orig_client_order_id"}.isdisjoint(known["bridge.v1.ExecutionReport"])
    for name, msg in sent.items():
        read = out["messages"][name]
        # What 1.0 reads: every field it knows, with the same values (a 1.1 enum value of a
        # field it knows stays its number).
        assert read["fields"] == _as_dict(_only_known(msg, known)), name
        # What 1.0 writes back: the whole 1.1 message, its unknown fields included.
        again = type(msg).FromString(bytes.fromhex(read["again"]))
        assert again == msg, name
    exec_type = out["messages"]["report"]["fields"]["exec_type"]
    assert exec_type == orders_pb2.EXEC_TYPE_REPLACED


@pytest.mark.parametrize("name", sorted(VECTOR_TYPES))
def test_every_frozen_vector_has_a_builder(name: str) -> None:
    """The vectors frozen at 1.0 are still built by scripts/gen_golden.py (never removed)."""
    assert name in BUILDERS
