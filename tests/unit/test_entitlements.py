"""The entitlements file: parsing, errors that name the field, and the shared test vector."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bridge.security import entitlements as ent

REPO = Path(__file__).resolve().parents[2]
VECTOR = REPO / "schemas" / "testdata" / "entitlements.toml"


def test_shared_vector_agrees() -> None:
    data = tomllib.loads(VECTOR.read_text("utf-8"))
    ents = ent.parse({k: v for k, v in data.items() if k != "expect"})
    assert ents.concrete
    for case in data["expect"]:
        identity = ents.by_nkey(case["nkey"])
        got = identity is not None and identity.entitled(case["account"])
        assert got == case["entitled"], case


def test_committed_dev_file_parses_with_dev_keys() -> None:
    ents = ent.load(REPO / "nats" / "entitlements.toml")
    assert not ents.concrete
    roles = {i.role for i in ents.identities}
    assert roles == {"orchestrator", "operator", "engine", "sentinel", "system", "sysadmin"}


def test_round_trip_through_toml() -> None:
    data = tomllib.loads(VECTOR.read_text("utf-8"))
    ents = ent.parse({k: v for k, v in data.items() if k != "expect"})
    assert ent.parse(tomllib.loads(ents.to_toml())) == ents


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "role": "orchestrator",
                "nkey": "Ubad",
                "certificate_subject": "CN=x",
                "accounts": ["A"],
            },
            "x.nkey",
        ),
        (
            {
                "role": "orchestrator",
                "nkey": "dev:x",
                "certificate_subject": "CN=x",
                "accounts": [],
            },
            "x.accounts",
        ),
        (
            {
                "role": "orchestrator",
                "nkey": "dev:x",
                "certificate_subject": "CN=x",
                "accounts": ["a.b"],
            },
            "x.accounts",
        ),
        (
            {"role": "engine", "nkey": "dev:x", "certificate_subject": "CN=x", "accounts": ["A"]},
            "x.accounts",
        ),
        ({"role": "king", "nkey": "dev:x", "certificate_subject": "CN=x"}, "x.role"),
        (
            {"role": "engine", "nkey": "dev:x", "certificate_subject": "CN=x", "colour": "red"},
            "x.colour",
        ),
    ],
)
def test_errors_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ent.EntitlementsError, match=rf"identities\.{field}"):
        ent.parse({"version": 1, "identities": {"x": body}})


def test_wrong_version_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ent.EntitlementsError, match="version"):
        ent.parse({"version": 2, "identities": {}})
    with pytest.raises(ent.EntitlementsError, match="cannot read"):
        ent.load(tmp_path / "missing.toml")
