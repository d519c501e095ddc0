"""The contract as data, for its generated reference (scripts/gen_asyncapi.py).

Three sources, none restated by hand:

* the messages and enums with their documentation: the .proto files of ``schemas/bridge/``,
  compiled by grpc_tools' protoc with ``--include_source_info``, comments read from the
  FileDescriptorSet's source code info;
* the subjects and what they carry: ``schemas/bridge/v1/contract.toml`` (``message`` and
  ``reply`` of each [subjects] entry; a wildcard entry carries what the entries it matches
  carry);
* who may use a subject: the permissions :mod:`bridge.security.server_auth` renders for each
  role, matched against the subject's pattern by NATS' wildcard rules.
"""

from __future__ import annotations

import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from bridge.security import server_auth
from bridge.security.entitlements import Identity, Role

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"
CONTRACT = SCHEMAS / "bridge" / "v1" / "contract.toml"
_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")
_FDP = descriptor_pb2.FieldDescriptorProto
# Source code info paths (descriptor.proto field numbers).
_MESSAGE_TYPE, _ENUM_TYPE, _SYNTAX = 4, 5, 12
_FIELD, _NESTED, _VALUE = 2, 3, 2
_SCALARS = {
    _FDP.TYPE_DOUBLE: "double",
    _FDP.TYPE_FLOAT: "float",
    _FDP.TYPE_INT64: "int64",
    _FDP.TYPE_UINT64: "uint64",
    _FDP.TYPE_INT32: "int32",
    _FDP.TYPE_FIXED64: "fixed64",
    _FDP.TYPE_FIXED32: "fixed32",
    _FDP.TYPE_BOOL: "bool",
    _FDP.TYPE_STRING: "string",
    _FDP.TYPE_BYTES: "bytes",
    _FDP.TYPE_UINT32: "uint32",
    _FDP.TYPE_SFIXED32: "sfixed32",
    _FDP.TYPE_SFIXED64: "sfixed64",
    _FDP.TYPE_SINT32: "sint32",
    _FDP.TYPE_SINT64: "sint64",
}


# --- messages and enums ----------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    number: int
    type: str
    """A scalar's name (int64) or a message's or enum's full name (bridge.v1.Decimal)."""
    kind: str
    """scalar, message or enum."""
    repeated: bool
    map_value: Field | None
    """For a map field: its value (keys are strings in this contract)."""
    doc: str

    @property
    def display_type(self) -> str:
        """How the .proto file writes the type (short names within the package)."""
        if self.map_value is not None:
            return f"map<string, {self.map_value.display_type}>"
        short = self.type.rsplit(".", 1)[-1]
        return f"repeated {short}" if self.repeated else short


@dataclass(frozen=True)
class EnumValue:
    name: str
    number: int
    doc: str


@dataclass(frozen=True)
class Enum:
    full_name: str
    file: str
    doc: str
    values: tuple[EnumValue, ...]


@dataclass(frozen=True)
class Message:
    full_name: str
    file: str
    doc: str
    fields: tuple[Field, ...]


@dataclass
class Schema:
    """Every message and enum of the contract, in file order, with their comments."""

    messages: dict[str, Message] = field(default_factory=dict)
    enums: dict[str, Enum] = field(default_factory=dict)
    file_docs: dict[str, str] = field(default_factory=dict)


def proto_files() -> list[Path]:
    """The contract's .proto files (the released copies under schemas/released/ excluded)."""
    return sorted(SCHEMAS.glob("bridge/**/*.proto"))


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The contract compiled with its comments (protoc --include_source_info)."""
    with tempfile.TemporaryDirectory(prefix="bridge-fds-") as tmp:
        out = Path(tmp) / "contract.binpb"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{SCHEMAS}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *(str(p.relative_to(SCHEMAS)) for p in proto_files()),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comment(text: str) -> str:
    """A comment block as text: one leading space per line dropped, paragraphs kept."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    return "\n".join(lines).strip()


def _docs(fd: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    docs: dict[tuple[int, ...], str] = {}
    for loc in fd.source_code_info.location:
        parts = [_comment(loc.leading_comments), _comment(loc.trailing_comments)]
        text = "\n\n".join(p for p in parts if p)
        if text:
            docs[tuple(loc.path)] = text
    return docs


def _field(
    f: descriptor_pb2.FieldDescriptorProto, doc: str, maps: dict[str, Field | None]
) -> Field:
    kind = {_FDP.TYPE_MESSAGE: "message", _FDP.TYPE_ENUM: "enum"}.get(f.type, "scalar")
    type_name = f.type_name.lstrip(".") if kind != "scalar" else _SCALARS[f.type]
    repeated = f.label == _FDP.LABEL_REPEATED
    map_value = maps.get(type_name) if kind == "message" else None
    return Field(f.name, f.number, type_name, kind, repeated, map_value, doc)


def load_schema(fds: descriptor_pb2.FileDescriptorSet | None = None) -> Schema:
    """The messages and enums of ``fds`` (default: the contract compiled now)."""
    schema = Schema()
    for fd in (fds or descriptor_set()).file:
        docs = _docs(fd)
        schema.file_docs[fd.name] = docs.get((_SYNTAX,), "")
        for i, enum in enumerate(fd.enum_type):
            _add_enum(schema, fd, docs, (_ENUM_TYPE, i), enum, fd.package)
        for i, msg in enumerate(fd.message_type):
            _add_message(schema, fd, docs, (_MESSAGE_TYPE, i), msg, fd.package)
    return schema


def _add_enum(
    schema: Schema,
    fd: descriptor_pb2.FileDescriptorProto,
    docs: dict[tuple[int, ...], str],
    path: tuple[int, ...],
    enum: descriptor_pb2.EnumDescriptorProto,
    scope: str,
) -> None:
    values = tuple(
        EnumValue(v.name, v.number, docs.get((*path, _VALUE, j), ""))
        for j, v in enumerate(enum.value)
    )
    full = f"{scope}.{enum.name}"
    schema.enums[full] = Enum(full, fd.name, docs.get(path, ""), values)


def _add_message(
    schema: Schema,
    fd: descriptor_pb2.FileDescriptorProto,
    docs: dict[tuple[int, ...], str],
    path: tuple[int, ...],
    msg: descriptor_pb2.DescriptorProto,
    scope: str,
) -> None:
    full = f"{scope}.{msg.name}"
    # Map entries (tags) are nested messages of their own; a map field names their value.
    maps: dict[str, Field | None] = {}
    for k, nested in enumerate(msg.nested_type):
        if nested.options.map_entry:
            value = _field(nested.field[1], "", {})
            maps[f"{full}.{nested.name}"] = value
        else:
            _add_message(schema, fd, docs, (*path, _NESTED, k), nested, full)
    for k, enum in enumerate(msg.enum_type):
        _add_enum(schema, fd, docs, (*path, 4, k), enum, full)
    fields = tuple(
        _field(f, docs.get((*path, _FIELD, j), ""), maps) for j, f in enumerate(msg.field)
    )
    schema.messages[full] = Message(full, fd.name, docs.get(path, ""), fields)


# --- subjects --------------------------------------------------------------------------------


def load_contract(path: Path = CONTRACT) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def consumer_filters(consumer: dict[str, Any]) -> list[str]:
    """The [subjects] names a [consumers] entry filters on: its ``filters`` (several, 1.2's
    engine consumer) or its one ``filter``."""
    filters = consumer.get("filters")
    return list(filters) if filters is not None else [consumer["filter"]]


def _tokens(subject: str) -> list[str]:
    return subject.split(".")


def _any_token(token: str) -> bool:
    return token == "*" or _PLACEHOLDER.match(token) is not None


def intersects(a: str, b: str) -> bool:
    """Is some subject matched by both ``a`` and ``b``? Each may hold ``*``, a final ``>`` and
    ``{placeholder}`` tokens (a placeholder stands for any one token)."""
    ta, tb = _tokens(a), _tokens(b)
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">":
            return y is not None  # '>' is one or more tokens
        if y == ">":
            return x is not None
        if x is None or y is None:
            return False
        if not (_any_token(x) or _any_token(y) or x == y):
            return False
    return True


def covers(grant: str, pattern: str) -> bool:
    """Does ``grant`` match EVERY subject of ``pattern``?"""
    tg, tp = _tokens(grant), _tokens(pattern)
    for i, g in enumerate(tg):
        if g == ">":
            return len(tp) > i
        if i >= len(tp) or tp[i] == ">":
            return False
        if g != "*" and g != tp[i]:
            return False
    return len(tg) == len(tp)


@dataclass(frozen=True)
class Subject:
    """One [subjects] entry of contract.toml, with what it carries and who may use it."""

    name: str
    pattern: str
    doc: str
    kind: str
    """``subject`` (names its message), ``filter`` (a wildcard) or ``inbox`` (a prefix)."""
    pairs: tuple[tuple[str, str | None], ...]
    """(message, reply or None) it carries: its own, or those of the subjects it matches."""
    publish: dict[str, tuple[str, ...]]
    """Role -> the grants that let it publish here (to some subject of the pattern)."""
    subscribe: dict[str, tuple[str, ...]]
    streams: tuple[str, ...]
    """The JetStream streams that capture it."""
    consumers: tuple[str, ...]
    """The durable consumers (``name on STREAM``) whose filter matches it."""

    @property
    def placeholders(self) -> list[str]:
        return [m.group(1) for t in _tokens(self.pattern) if (m := _PLACEHOLDER.match(t))]


def _test_key(role: str) -> str:
    return "U" + (role.upper() * 56)[:55]


def reference_identities() -> dict[str, Identity]:
    """One identity per role, entitled to every account (an orchestrator or operator of a real
    entitlements file holds the same grants for its own accounts only)."""
    found: dict[str, Identity] = {}
    for role in get_args(Role):
        accounts = ("*",) if role in ("orchestrator", "operator") else ()
        identity = Identity(
            name=f"reference-{role}",
            role=role,
            nkey=_test_key(role),
            certificate_subject=f"CN=reference-{role}",
            accounts=accounts,
        )
        found[role] = identity
    return found


def _allowed(allow: tuple[str, ...], deny: tuple[str, ...], pattern: str) -> tuple[str, ...]:
    if any(covers(d, pattern) for d in deny):
        return ()
    return tuple(dict.fromkeys(g for g in allow if intersects(g, pattern)))


def private_subjects(contract: dict[str, Any] | None = None) -> set[str]:
    """The engine-private [subjects] entries (``private_message``: the engines' journal) and
    the wildcards over nothing else: names of the contract, not part of the orchestrator's
    API (no channel of the AsyncAPI document)."""
    contract = contract or load_contract()
    entries: dict[str, dict[str, Any]] = contract["subjects"]
    private = {n for n, e in entries.items() if "private_message" in e}
    public = [e["pattern"] for n, e in entries.items() if "message" in e]
    for name, entry in entries.items():
        pattern = entry["pattern"]
        if name in private or "message" in entry or not ("*" in pattern or ">" in pattern):
            continue
        covers_private = any(intersects(pattern, entries[p]["pattern"]) for p in private)
        if covers_private and not any(intersects(pattern, p) for p in public):
            private.add(name)
    return private


def load_subjects(contract: dict[str, Any] | None = None) -> list[Subject]:
    """Every [subjects] entry of the orchestrator's API (not the engine-private ones), in the
    file's order."""
    contract = contract or load_contract()
    private = private_subjects(contract)
    every: dict[str, dict[str, Any]] = contract["subjects"]
    entries = {n: e for n, e in every.items() if n not in private}
    identities = reference_identities()
    perms = {role: server_auth.permissions(i) for role, i in identities.items()}
    inboxes = {role: server_auth.inbox_prefix(i) for role, i in identities.items()}
    carrying = {n: e for n, e in entries.items() if "message" in e}
    replies = tuple(dict.fromkeys(e["reply"] for e in carrying.values() if "reply" in e))
    subjects = []
    for name, entry in entries.items():
        pattern: str = entry["pattern"]
        if "message" in entry:
            kind = "subject"
            pairs: tuple[tuple[str, str | None], ...] = ((entry["message"], entry.get("reply")),)
        elif "*" in pattern or ">" in pattern:
            kind = "filter"
            matched = (
                (e["message"], e.get("reply"))
                for e in carrying.values()
                if intersects(pattern, e["pattern"])
            )
            pairs = tuple(dict.fromkeys(matched))
        else:
            kind = "inbox"
            pairs = tuple((r, None) for r in replies)
        if kind == "inbox":
            # The roles whose identities take their replies under this prefix (no role
            # publishes there: a reply goes out through the responder's allow_responses).
            address = f"{pattern}.>"
            publish: dict[str, tuple[str, ...]] = {}
            subscribe = {
                r: g
                for r, p in perms.items()
                if len(_tokens(inboxes[r])) == len(_tokens(pattern))
                and intersects(inboxes[r], pattern)
                and (g := _allowed(p.subscribe_allow, (), f"{inboxes[r]}.>"))
            }
        else:
            address = pattern
            publish = {
                r: g
                for r, p in perms.items()
                if (g := _allowed(p.publish_allow, p.publish_deny, address))
            }
            subscribe = {
                r: g for r, p in perms.items() if (g := _allowed(p.subscribe_allow, (), address))
            }
        streams = tuple(
            s["name"]
            for s in contract["streams"].values()
            if any(intersects(every[f]["pattern"], address) for f in s["subjects"])
        )
        consumers = tuple(
            f"{c['name']} on {contract['streams'][c['stream']]['name']}"
            for c in contract["consumers"].values()
            if any(intersects(every[f]["pattern"], address) for f in consumer_filters(c))
        )
        subjects.append(
            Subject(
                name, pattern, entry["doc"], kind, pairs, publish, subscribe, streams, consumers
            )
        )
    return subjects
