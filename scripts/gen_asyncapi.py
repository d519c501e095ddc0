"""Generate the contract's reference: ``schemas/asyncapi.json`` and ``schemas/REFERENCE.md``.

From the .proto comments (protoc --include_source_info), ``schemas/bridge/v1/contract.toml``
(every subject and the message it carries) and the roles' permissions
(``bridge/security/server_auth.py``, matched by NATS wildcard rules): see
:mod:`bridge_dev.contract_model`. Nothing in the output is written by hand; both files are
committed and ``tests/contract/test_reference.py`` fails when they are stale.
Usage: ``python scripts/gen_asyncapi.py [--out DIR]`` (default: schemas/).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bridge.security import server_auth
from bridge_dev.contract_model import (
    SCHEMAS,
    Enum,
    Field,
    Message,
    Schema,
    Subject,
    load_contract,
    load_schema,
    load_subjects,
)

ASYNCAPI = "asyncapi.json"
REFERENCE = "REFERENCE.md"
CONTENT_TYPE = "application/x-protobuf"
REPLY_CHANNEL = "reply"
_GENERATED = "scripts/gen_asyncapi.py"
_SOURCES = "schemas/bridge/v1/*.proto, contract.toml and bridge/security/server_auth.py"
_NUMBERS = {
    "double": ("number", "double"),
    "float": ("number", "float"),
    "int64": ("integer", "int64"),
    "sint64": ("integer", "int64"),
    "sfixed64": ("integer", "int64"),
    "uint64": ("integer", "uint64"),
    "fixed64": ("integer", "uint64"),
    "int32": ("integer", "int32"),
    "sint32": ("integer", "int32"),
    "sfixed32": ("integer", "int32"),
    "uint32": ("integer", "uint32"),
    "fixed32": ("integer", "uint32"),
}


def _summary(doc: str) -> str:
    """The first sentence of a comment (its first paragraph, if no full stop ends one)."""
    first = doc.split("\n\n", 1)[0].replace("\n", " ")
    end = first.find(". ")
    return first[: end + 1] if end >= 0 else first


# --- AsyncAPI --------------------------------------------------------------------------------


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _value_schema(f: Field) -> dict[str, Any]:
    if f.kind != "scalar":
        return _ref("schemas", f.type)
    if f.type in _NUMBERS:
        kind, fmt = _NUMBERS[f.type]
        return {"type": kind, "format": fmt}
    if f.type == "bytes":
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "boolean" if f.type == "bool" else "string"}


def _field_schema(f: Field) -> dict[str, Any]:
    if f.map_value is not None:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": _value_schema(f.map_value),
        }
    elif f.repeated:
        schema = {"type": "array", "items": _value_schema(f)}
    elif f.kind != "scalar":
        schema = {"allOf": [_value_schema(f)]}  # a $ref takes no siblings
    else:
        schema = _value_schema(f)
    if f.doc:
        schema["description"] = f.doc
    schema["x-protobuf-field"] = f.number
    schema["x-protobuf-type"] = f.display_type
    return schema


def _message_schema(m: Message) -> dict[str, Any]:
    return {
        "type": "object",
        "description": m.doc,
        "properties": {f.name: _field_schema(f) for f in m.fields},
        "x-protobuf-message": m.full_name,
        "x-protobuf-file": m.file,
    }


def _enum_schema(e: Enum) -> dict[str, Any]:
    return {
        "type": "string",
        "description": e.doc,
        "enum": [v.name for v in e.values],
        "x-protobuf-enum": e.full_name,
        "x-protobuf-file": e.file,
        "x-protobuf-values": {
            v.name: {"number": v.number, **({"description": v.doc} if v.doc else {})}
            for v in e.values
        },
    }


def _used_messages(subjects: list[Subject]) -> list[str]:
    used = [n for s in subjects for pair in s.pairs for n in pair if n is not None]
    return list(dict.fromkeys(used))


def _reply_messages(subjects: list[Subject]) -> list[str]:
    return list(dict.fromkeys(r for s in subjects for _, r in s.pairs if r is not None))


def _channel(s: Subject, ids: dict[str, str]) -> dict[str, Any]:
    notes = [s.doc]
    if s.kind == "filter":
        notes.append("A wildcard: it carries what the subjects it matches carry.")
    if s.kind == "inbox":
        notes.append("An inbox prefix: replies to requests arrive on subjects under it.")
    if s.streams:
        notes.append("Captured by the JetStream stream " + ", ".join(s.streams) + ".")
    if s.consumers:
        notes.append("Read through the durable consumer " + ", ".join(s.consumers) + ".")
    channel: dict[str, Any] = {
        "address": s.pattern,
        "title": s.name,
        "description": "\n\n".join(notes),
        "messages": {m: _ref("messages", m) for m in _own_messages(s)},
    }
    if s.placeholders:
        # the id rules of contract.toml describe the tokens they govern; the others, the
        # subject's description
        channel["parameters"] = {
            p: ({"description": ids[p]} if p in ids else {}) for p in s.placeholders
        }
    channel["x-bridge-kind"] = s.kind
    return channel


def _operation(s: Subject, action: str, grants: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    roles = list(grants)
    verb = "publish to" if action == "send" else "subscribe to"
    op: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{s.name}"},
        "title": f"{s.name}: {action}",
        "summary": f"Roles that may {verb} it: {', '.join(roles)}.",
        "messages": [{"$ref": f"#/channels/{s.name}/messages/{m}"} for m in _own_messages(s)],
        "x-bridge-roles": roles,
        "x-bridge-grants": {r: list(g) for r, g in grants.items()},
    }
    replies = list(dict.fromkeys(r for _, r in s.pairs if r is not None))
    if replies and s.kind != "inbox":
        op["reply"] = {
            "channel": {"$ref": f"#/channels/{REPLY_CHANNEL}"},
            "messages": [{"$ref": f"#/channels/{REPLY_CHANNEL}/messages/{r}"} for r in replies],
        }
    return op


def _own_messages(s: Subject) -> list[str]:
    return list(dict.fromkeys(m for m, _ in s.pairs))


def asyncapi(schema: Schema, subjects: list[Subject], contract: dict[str, Any]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document."""
    ids = {name: f"{e['doc']} Pattern: {e['pattern']}" for name, e in contract["ids"].items()}
    version = contract["constants"]["CONTRACT_VERSION"]["value"]
    roles = "\n".join(f"* {r}: {doc}" for r, doc in contract["roles"].items())
    system = ", ".join(sorted(server_auth.SYSTEM_ROLES))
    roles += f"\n* {system}: identities of the server's system account (server_auth.py)."
    channels = {s.name: _channel(s, ids) for s in subjects}
    channels[REPLY_CHANNEL] = {
        "address": None,
        "title": REPLY_CHANNEL,
        "description": "The reply subject of a request: an inbox of the requester "
        "(identity_inbox_prefix for an orchestrator, inbox_prefix for the other roles). The "
        "engine answers through allow_responses (one publish to the reply subject of a request "
        "it received).",
        "messages": {m: _ref("messages", m) for m in _reply_messages(subjects)},
        "x-bridge-kind": "reply",
    }
    operations: dict[str, Any] = {}
    for s in subjects:
        if s.publish:
            operations[f"{s.name}.publish"] = _operation(s, "send", s.publish)
        if s.subscribe:
            operations[f"{s.name}.subscribe"] = _operation(s, "receive", s.subscribe)
    used = _used_messages(subjects)
    messages = {
        name: {
            "name": name,
            "title": name.rsplit(".", 1)[-1],
            "summary": _summary(schema.messages[name].doc),
            "contentType": CONTENT_TYPE,
            "payload": _ref("schemas", name),
        }
        for name in used
    }
    schemas: dict[str, Any] = {n: _message_schema(m) for n, m in schema.messages.items()}
    schemas |= {n: _enum_schema(e) for n, e in schema.enums.items()}
    return {
        "asyncapi": "3.0.0",
        "id": "urn:nats-execution-bridge:contract:bridge.v1",
        "info": {
            "title": "NATS execution bridge: contract bridge.v1",
            "version": version,
            "description": (
                f"Generated by {_GENERATED} from {_SOURCES}: do not edit.\n\n"
                "Every subject of the contract (channels; a `{token}` is a parameter, `*` and "
                "`>` are NATS wildcards), the protobuf message it carries (binary protobuf, "
                "contentType application/x-protobuf; the JSON Schemas below describe its "
                "fields, x-protobuf-field giving each one's number), and the roles the "
                "server's permissions let publish (send) or subscribe (receive) to it "
                "(x-bridge-grants: the permission that matches). An orchestrator or operator "
                "identity holds these grants for the accounts it is entitled to only.\n\n"
                "Requests carry the headers Bridge-Schema (the payload's full message name) "
                "and Bridge-Schema-Version (major.minor of the sender's contract). Versioning "
                "rules: schemas/README.md.\n\nRoles:\n" + roles
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


# --- Markdown --------------------------------------------------------------------------------


def _cell(text: str) -> str:
    text = text.replace("<", "&lt;").replace("|", "\\|")
    return text.replace("\n\n", "<br>").replace("\n", " ")


def _prose(text: str) -> str:
    return text.replace("<", "&lt;")


def _type_link(f: Field, schema: Schema) -> str:
    target = f.map_value or f
    if target.type in schema.messages or target.type in schema.enums:
        short = target.type.rsplit(".", 1)[-1]
        return f"[`{f.display_type}`](#{short.lower()})"
    return f"`{f.display_type}`"


def _roles(grants: dict[str, tuple[str, ...]]) -> str:
    return ", ".join(grants) or "-"


def _carries(s: Subject) -> str:
    if s.kind == "inbox":
        return "replies"
    return "<br>".join(
        f"{m.rsplit('.', 1)[-1]}" + (f" → {r.rsplit('.', 1)[-1]}" if r else "") for m, r in s.pairs
    )


def reference(schema: Schema, subjects: list[Subject], contract: dict[str, Any]) -> str:
    """The Markdown reference: the subject map, then every message and enum."""
    version = contract["constants"]["CONTRACT_VERSION"]["value"]
    out = [
        "# Contract reference (bridge.v1)",
        "",
        f"<!-- Generated by {_GENERATED} from {_SOURCES}: do not edit. -->",
        "",
        f"Contract version {version}. The same content, machine-readable: "
        "[asyncapi.json](asyncapi.json) (AsyncAPI 3.0). How the contract evolves: "
        "[README.md](README.md).",
        "",
        "## Subject map",
        "",
        "`{token}` is one subject token; `*` and `>` are NATS wildcards (a wildcard carries what "
        "the subjects it matches carry). *Publish* and *Subscribe* are the roles whose server "
        "permissions (bridge/security/server_auth.py) allow it; an orchestrator or operator "
        "only for the accounts it is entitled to. A → B: request A, reply B on the requester's "
        "inbox.",
        "",
        "| Name | Subject | Carries | Publish | Subscribe | Description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in subjects:
        notes = s.doc
        if s.streams:
            notes += f" Stream: {', '.join(s.streams)}."
        if s.consumers:
            notes += f" Consumer: {', '.join(s.consumers)}."
        out.append(
            f"| {s.name} | `{s.pattern}` | {_carries(s)} | {_roles(s.publish)} | "
            f"{_roles(s.subscribe)} | {_cell(notes)} |"
        )
    out += ["", "## Messages", ""]
    for file, file_doc in schema.file_docs.items():
        out += [f"### {file}", "", _prose(file_doc), ""]
        for m in (m for m in schema.messages.values() if m.file == file):
            out += [f"#### {m.full_name.rsplit('.', 1)[-1]}", "", _prose(m.doc), ""]
            if m.fields:
                out += ["| # | Field | Type | Description |", "| --- | --- | --- | --- |"]
                out += [
                    f"| {f.number} | {f.name} | {_type_link(f, schema)} | {_cell(f.doc)} |"
                    for f in m.fields
                ]
                out.append("")
        for e in (e for e in schema.enums.values() if e.file == file):
            out += [f"#### {e.full_name.rsplit('.', 1)[-1]}", "", f"Enum. {_prose(e.doc)}", ""]
            out += ["| # | Value | Description |", "| --- | --- | --- |"]
            out += [f"| {v.number} | {v.name} | {_cell(v.doc)} |" for v in e.values]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def render() -> dict[str, str]:
    """File name -> content, as committed under schemas/."""
    schema, contract = load_schema(), load_contract()
    subjects = load_subjects(contract)
    doc = asyncapi(schema, subjects, contract)
    return {
        ASYNCAPI: json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
        REFERENCE: reference(schema, subjects, contract),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=SCHEMAS)
    ns = parser.parse_args()
    for name, text in render().items():
        (ns.out / name).write_text(text, "utf-8")
        print(f"generated {ns.out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
