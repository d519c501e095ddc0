"""The contract file is the one place that spells a NATS name (issue 11, item 1).

``schemas/bridge/v1/contract.toml`` declares every subject, stream, consumer, KV bucket and key,
header, id rule and size limit. These tests check that:

* the committed ``bridge/contract.py`` is what the generator makes of it (the Rust module is
  generated at build time by ``engine-rs/build.rs`` and cannot be stale);
* the server configuration (per-role permissions) and the JetStream definitions use exactly the
  contract's names, and every contract subject is reachable by some role, so a renamed subject
  cannot silently break a role;
* no hand-written Python or Rust source spells a subject, stream, bucket or header itself.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bridge import contract

REPO = Path(__file__).resolve().parents[2]
CONF_FILES = [REPO / "nats" / "server.conf"]
JETSTREAM_DIR = REPO / "bridge" / "jetstream"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Tokens of JetStream/KV API subjects that are not names of ours.
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
}


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


def _conf_subjects(path: Path) -> list[str]:
    """Every quoted subject in the authorization block of a nats-server configuration."""
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text("utf-8").splitlines())
    lists = re.findall(r"\b(?:allow|deny)\s*:\s*\[([^\]]*)\]", text)
    return [s for body in lists for s in re.findall(r'"([^"]+)"', body)]


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
def test_server_permissions_use_only_contract_names(conf: Path) -> None:
    """Every subject a role is granted or denied is a contract subject, inbox, stream or bucket."""
    ours = [e["pattern"] for e in TOML["subjects"].values()]
    known_subjects = {_PLACEHOLDER.sub("*", p) for p in ours}
    inboxes = {f"{contract.inbox_prefix(role)}.>" for role in contract.ROLES}
    names = {e["name"] for t in ("streams", "kv_buckets") for e in TOML[t].values()}
    names |= {e["name"] for e in TOML["consumers"].values()}
    found = _conf_subjects(conf)
    assert len(found) > 10, f"no permissions parsed from {conf}"
    for subject in found:
        if subject.startswith(("$JS.", "$KV.", "$SYS.")):
            unknown = set(subject[1:].split(".")) - _API_WORDS - names - {">", "*"}
            assert not unknown, f"{conf.name}: {subject!r} names {unknown}, not in the contract"
        elif subject.startswith("_INBOX."):
            assert subject in inboxes, f"{conf.name}: {subject!r} is no role's inbox"
        elif subject != ">":
            assert subject in known_subjects, f"{conf.name}: {subject!r} is not a contract subject"


@pytest.mark.parametrize("conf", CONF_FILES, ids=lambda p: p.name)
def test_every_contract_subject_is_reachable(conf: Path) -> None:
    """Each contract subject is covered by some permission, so a rename shows up here."""
    granted = _conf_subjects(conf)
    for name, entry in TOML["subjects"].items():
        if name == "inbox_prefix":
            continue  # each role's own inbox: checked below
        subject = _example(entry["pattern"])
        covering = [g for g in granted if g != ">" and _matches(g, subject)]
        assert covering, f"{conf.name}: no role may use {name} ({entry['pattern']})"
    for role in contract.ROLES:
        inbox = f"{contract.inbox_prefix(role)}.x1"
        assert any(_matches(g, inbox) for g in granted if g != ">"), f"{role}: no inbox"


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
        assert defs[file]["filter_subject"] == subjects[consumer["filter"]]["pattern"]
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
