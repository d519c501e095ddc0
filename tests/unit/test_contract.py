"""The contract file is the one place that spells a NATS name (issue 11, item 1).

``schemas/bridge/v1/contract.toml`` declares every subject, stream, consumer, KV bucket and key,
header, id rule and size limit. These tests check that:

* the committed ``bridge/contract.py`` is what the generator makes of it (the Rust module is
  generated at build time by ``engine-rs/build.rs`` and cannot be stale);
* the server's permissions (rendered from the dev entitlements file by
  ``bridge.security.server_auth``; the committed configs hold no users) and the JetStream
  definitions use exactly the contract's names, and every contract subject is reachable by some
  identity, so a renamed subject cannot silently break a role;
* no hand-written Python or Rust source spells a subject, stream, bucket or header itself.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bridge import contract
from bridge.security import entitlements as ent
from bridge.security import server_auth

REPO = Path(__file__).resolve().parents[2]
CONF_FILES = [REPO / "nats" / "server.conf", REPO / "nats" / "cluster.conf"]
DEV_ENTITLEMENTS = REPO / "nats" / "entitlements.toml"
JETSTREAM_DIR = REPO / "bridge" / "jetstream"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Tokens of JetStream/KV/system API subjects that are not names of ours.
_API_WORDS = {
    *[
        "JS",
        "API",
        "STREAM",
        "CONSUMER",
        "INFO",
        "CREATE",
        "UPDATE",
        "DELETE",
        "PURGE",
        "MSG",
        "NEXT",
        "ACK",
        "FC",
        "KV",
        "SYS",
        "REQ",
    ],
    *[
        "DURABLE",
        "LIST",
        "NAMES",
        "GET",
        "DIRECT",
        "LEADER",
        "STEPDOWN",
        "SNAPSHOT",
        "RESTORE",
        "ACCOUNT",
        "SERVER",
    ],
    # nats-server's system API (connection listing, kick, authentication advisories)
    *["PING", "CONNZ", "KICK", "CLIENT", "AUTH", "ERR", "RELOAD"],
    # ... and the cluster runbook's (`nats server ls`, `server report jetstream`, peer-remove)
    *["JSZ", "REMOVE"],
}
# $JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter subject>: the filter is a subject of ours.
_FILTERED_CREATE = re.compile(r"^\$JS\.API\.CONSUMER\.CREATE\.([^.]+)\.([^.]+)\.(.+)$")


def _load_generator() -> ModuleType:
    path = REPO / "scripts" / "gen_contract.py"
    spec = importlib.util.spec_from_file_location("_gen_contract", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
TOML: dict[str, Any] = GEN.load()


def _example(pattern: str) -> str:
    """A concrete subject of ``pattern``, each placeholder filled with a valid token."""
    return _PLACEHOLDER.sub("x1", pattern)


def _matches(filter_subject: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more tokens."""
    f, s = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(f):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(f) == len(s)


def _grants_some_instance(grant: str, pattern: str) -> bool:
    """Does ``grant`` match some subject of contract ``pattern`` (each placeholder, ``*`` or
    ``>`` of the pattern standing for whatever token the grant names)?"""
    p, g = pattern.split("."), grant.split(".")
    for i, token in enumerate(g):
        if token == ">":
            return len(p) > i
        if i >= len(p):
            return False
        if p[i] == ">":
            return True
        if token != "*" and p[i] != "*" and not _PLACEHOLDER.fullmatch(p[i]) and token != p[i]:
            return False
    return len(g) == len(p)


def _test_key(name: str) -> str:
    """A syntactically valid public user NKey per identity name (no real key is needed)."""
    digest = base64.b32encode(hashlib.sha512(name.encode()).digest()).decode()
    return "U" + digest[:55]


DEV_RESOLVED = ent.load(DEV_ENTITLEMENTS).resolve(_test_key)
RENDERED = server_auth.render(DEV_RESOLVED, source="nats/entitlements.toml")


def _uncommented(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _conf_subjects(text: str) -> list[str]:
    """Every quoted subject in the allow/deny lists of a nats-server configuration text."""
    lists = re.findall(r"\b(?:allow|deny)\s*:\s*\[([^\]]*)\]", _uncommented(text))
    return [s for body in lists for s in re.findall(r'"([^"]+)"', body)]


def _ours(subject: str) -> bool:
    """A subject of some contract pattern, each placeholder a valid token or a wildcard."""
    for entry in TOML["subjects"].values():
        parts = [
            r"[^.]+" if _PLACEHOLDER.fullmatch(t) else re.escape(t)
            for t in entry["pattern"].split(".")
        ]
        if re.fullmatch(r"\.".join(parts), subject):
            return True
    return False


def _api_subject_known(subject: str, names: set[str]) -> bool:
    created = _FILTERED_CREATE.match(subject)
    if created:
        stream, consumer, filter_subject = created.groups()
        return stream in names and consumer in {"*", *names} and _ours(filter_subject)
    return not set(subject[1:].split(".")) - _API_WORDS - names - {">", "*"}


def test_generated_python_module_is_up_to_date() -> None:
    """bridge/contract.py is byte-identical to a fresh generation from contract.toml."""
    fresh = GEN.render(TOML)
    committed = (REPO / "bridge" / "contract.py").read_text("utf-8")
    assert committed == fresh, "stale: run `python scripts/gen_contract.py` and commit the result"


def test_python_module_has_every_contract_name() -> None:
    """Each TOML entry became the Python name the naming rules promise, with its value."""
    for name, entry in TOML["subjects"].items():
        if _PLACEHOLDER.search(entry["pattern"]):
            args = ["x1"] * len(_PLACEHOLDER.findall(entry["pattern"]))
            assert getattr(contract, name)(*args) == _example(entry["pattern"])
        else:
            assert getattr(contract, name.upper()) == entry["pattern"]
    for table, suffix in [("streams", "_STREAM"), ("kv_buckets", "_KV_BUCKET")]:
        for name, entry in TOML[table].items():
            assert getattr(contract, f"{name.upper()}{suffix}") == entry["name"]
    for name, entry in TOML["headers"].items():
        assert getattr(contract, f"HEADER_{name.upper()}") == entry["name"]
    for name, entry in TOML["limits"].items():
        assert getattr(contract, name) == entry["value"]
    assert contract.queue("A") == "bridge.v1.orders.queue.A"


@pytest.mark.parametrize("conf", CONF_FILES, ids=lambda p: p.name)
def test_committed_configs_hold_no_users(conf: Path) -> None:
    """Users and permissions come only from the rendered accounts (the entitlements file)."""
    text = _uncommented(conf.read_text("utf-8"))
    for word in ("users", "nkey", "permissions", "accounts", "NKEY"):
        assert not re.search(rf"\b{word}\b", text), f"{conf.name} still configures {word}"


def test_rendered_permissions_use_only_contract_names() -> None:
    """Every subject an identity is granted or denied in the accounts rendered from the dev
    entitlements is a contract subject, an identity's inbox, or a JetStream/system API name
    built from the contract's streams, consumers and buckets."""
    roles = {*contract.ROLES, *(i.role for i in DEV_RESOLVED.identities)}
    inboxes = {f"{contract.inbox_prefix(role)}.>" for role in roles}
    inboxes |= {
        f"{contract.identity_inbox_prefix(i.role, i.nkey)}.>" for i in DEV_RESOLVED.identities
    }
    names = {e["name"] for t in ("streams", "kv_buckets", "consumers") for e in TOML[t].values()}
    names |= {contract.kv_stream(e["name"]) for e in TOML["kv_buckets"].values()}
    found = _conf_subjects(RENDERED)
    assert len(found) > 30, "no permissions parsed from the rendered accounts"
    for subject in found:
        if subject.startswith(("$JS.", "$KV.", "$SYS.")):
            assert _api_subject_known(subject, names), f"{subject!r} is not a contract name"
        elif subject.startswith("_INBOX."):
            assert subject in inboxes, f"{subject!r} is no identity's inbox"
        elif subject.startswith("$SRV."):
            service = {contract.SERVICE_ALL, contract.service_ping(contract.SERVICE_NAME)}
            assert subject in service, f"{subject!r} is not the contract's service API"
        elif subject != ">":
            assert _ours(subject), f"{subject!r} is not a contract subject"


def test_every_contract_subject_is_reachable() -> None:
    """Each contract subject is granted to some identity, and each identity its own inbox, so
    a rename shows up here."""
    granted = [g for g in _conf_subjects(RENDERED) if g != ">"]
    for name, entry in TOML["subjects"].items():
        if name in ("inbox_prefix", "identity_inbox_prefix"):
            continue  # each identity's own inbox: checked below
        covering = [g for g in granted if _grants_some_instance(g, entry["pattern"])]
        assert covering, f"no identity may use {name} ({entry['pattern']})"
    for identity in DEV_RESOLVED.identities:
        inbox = f"{server_auth.inbox_prefix(identity)}.x1"
        assert any(_matches(g, inbox) for g in granted), f"{identity.name}: no inbox"


_SUBJECT_KEYS = {"pattern", "doc", "message", "reply", "private_message"}


def _message_names() -> set[str]:
    """Every message of the generated bridge/v1 modules (the .proto files as compiled)."""
    names: set[str] = set()
    for path in sorted((REPO / "bridge" / "v1").glob("*_pb2.py")):
        module = importlib.import_module(f"bridge.v1.{path.stem}")
        names |= {d.full_name for d in module.DESCRIPTOR.message_types_by_name.values()}
    return names


def test_every_subject_names_messages_that_exist() -> None:
    """A subject's `message` and `reply` are messages of the contract; every subject carries
    one, is a wildcard over subjects that do, or is an inbox prefix (replies arrive there)."""
    messages = _message_names()
    assert "bridge.v1.NewOrder" in messages
    carrying = {
        n: e for n, e in TOML["subjects"].items() if "message" in e or "private_message" in e
    }
    for name, entry in TOML["subjects"].items():
        unknown = set(entry) - _SUBJECT_KEYS
        assert not unknown, f"[subjects] {name}: unknown keys {sorted(unknown)}"
        for key in ("message", "reply"):
            if key in entry:
                assert entry[key] in messages, f"[subjects] {name}.{key}: no {entry[key]}"
        assert "reply" not in entry or "message" in entry, f"{name}: a reply without a message"
        pattern = entry["pattern"]
        if "message" in entry:
            assert "*" not in pattern, f"{name}: a wildcard names no message of its own"
            assert ">" not in pattern, f"{name}: a wildcard names no message of its own"
        elif "*" in pattern or ">" in pattern:
            matched = [
                n for n, e in carrying.items() if _grants_some_instance(pattern, e["pattern"])
            ]
            assert matched, f"{name}: a wildcard over no subject that carries a message"
        elif "private_message" in entry:
            # Engine-private (engine-rs/proto): declared in the engine's own package.
            assert entry["private_message"].startswith("bridge.engine.v1."), name
            proto = (REPO / "engine-rs" / "proto" / "engine" / "v1" / "state.proto").read_text()
            short = entry["private_message"].rsplit(".", 1)[1]
            assert f"message {short} {{" in proto, f"{name}: no {entry['private_message']}"
        else:
            assert pattern.startswith("_INBOX."), f"{name}: names no message"


def _definitions() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text("utf-8")) for p in sorted(JETSTREAM_DIR.glob("*.json"))}


def test_jetstream_definitions_are_the_contracts() -> None:
    """Stream, consumer and KV definitions exist for exactly the contract's names and subjects."""
    defs = _definitions()
    subjects = TOML["subjects"]
    expected: set[str] = set()
    for stream in TOML["streams"].values():
        file = f"{stream['name'].lower()}.json"
        expected.add(file)
        assert defs[file]["name"] == stream["name"]
        assert defs[file]["subjects"] == [subjects[s]["pattern"] for s in stream["subjects"]]
    for consumer in TOML["consumers"].values():
        stream = TOML["streams"][consumer["stream"]]["name"]
        file = f"{stream.lower()}-{consumer['name']}.consumer.json"
        expected.add(file)
        assert defs[file]["durable_name"] == consumer["name"]
        names = consumer.get("filters") or [consumer["filter"]]
        filters = [subjects[f]["pattern"] for f in names]
        if len(filters) == 1:
            assert defs[file]["filter_subject"] == filters[0]
        else:  # several filters (nats-server 2.10+): filter_subjects, never filter_subject too
            assert defs[file]["filter_subjects"] == filters
            assert "filter_subject" not in defs[file]
    for bucket in TOML["kv_buckets"].values():
        file = f"kv-{bucket['name']}.json"
        expected.add(file)
        assert defs[file]["bucket"] == bucket["name"]
    assert set(defs) == expected


# --- no hand-written source spells a name --------------------------------------------------

_HAND_WRITTEN_PY = ["bridge", "bridge_dev", "bench", "examples", "scripts"]
_GENERATED_PY = {"contract.py", "gen_contract.py"}
_HAND_WRITTEN_RS = ["engine-rs/src", "engine-rs/tests"]


def _exact_names() -> set[str]:
    """Names that are only ever ours: streams, buckets, headers (generic words left out)."""
    names = {e["name"] for t in ("streams", "kv_buckets", "headers") for e in TOML[t].values()}
    return names


def _spells_a_name(literal: str) -> bool:
    if literal in _EXACT:
        return True
    # A subject of ours: the prefix followed by a lower-case token (not a message type name
    # such as bridge.v1.NewOrder, which is the protobuf package, not a subject).
    subject = re.search(re.escape(contract.PREFIX) + r"\.[a-z]", literal) is not None
    return subject and not literal.endswith(".rs")  # prost's generated file name


_EXACT = _exact_names()


def _python_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def _rust_literals(path: Path) -> list[tuple[int, str]]:
    text = path.read_text("utf-8")
    found: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("#[cfg(test)]"):
            break
        if line.strip().startswith("//"):
            continue
        found += [(lineno, m) for m in re.findall(r'"((?:[^"\\]|\\.)*)"', line)]
    return found


def test_no_hand_written_source_spells_a_contract_name() -> None:
    """Subjects, streams, buckets and headers are spelled only in the contract."""
    offenders: list[str] = []
    for root in _HAND_WRITTEN_PY:
        for path in sorted((REPO / root).rglob("*.py")):
            if path.name in _GENERATED_PY or "_pb2" in path.name:
                continue
            for lineno, literal in _python_literals(path):
                if _spells_a_name(literal):
                    offenders.append(f"{path.relative_to(REPO)}:{lineno}: {literal!r}")
    for root in _HAND_WRITTEN_RS:
        for path in sorted((REPO / root).rglob("*.rs")):
            if path.parts[-2] == "tests" and root == "engine-rs/src":
                continue
            for lineno, literal in _rust_literals(path):
                if _spells_a_name(literal):
                    offenders.append(f"{path.relative_to(REPO)}:{lineno}: {literal!r}")
    assert not offenders, "use the contract module instead:\n" + "\n".join(offenders)
