"""The pure cores of runtime configuration: document validation (the shared test vector, which
the engine checks too), the shipped schema copies, diffs, routing and the resizable limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bridge._slots import Slots
from bridge.models import Order
from bridge.runtime_config import documents
from bridge.runtime_config.routing import DEFAULT_ROUTING, Routing

ROOT = Path(__file__).resolve().parents[2]
VECTOR = json.loads((ROOT / "schemas/testdata/config_documents.json").read_text())


@pytest.mark.parametrize("case", VECTOR["cases"], ids=lambda c: f"{c['document']}:{c['errors']}")
def test_shared_vector(case: dict[str, Any]) -> None:
    body = case["raw"] if "raw" in case else json.dumps(case["body"])
    checked = documents.validate(case["document"], body)
    assert [(e.field, e.rule) for e in checked.errors] == [
        (e["field"], e["rule"]) for e in case["errors"]
    ]
    assert checked.ok is (checked.document is not None)
    assert all(e.message for e in checked.errors)


def test_schemas_shipped_in_the_package_are_the_repos() -> None:
    """bridge/runtime_config/schemas is package data (the wheel has no schemas/ directory);
    fix a difference with `cp schemas/config/v1/*.json bridge/runtime_config/schemas/`."""
    repo = {p.name: p.read_bytes() for p in (ROOT / "schemas/config/v1").glob("*.json")}
    shipped = {
        p.name: p.read_bytes() for p in (ROOT / "bridge/runtime_config/schemas").glob("*.json")
    }
    assert shipped == repo
    assert {f"{k}.schema.json" for k in documents.KEYS} == set(repo)


def test_every_schema_is_a_valid_2020_12_schema() -> None:
    from jsonschema import Draft202012Validator

    for key in documents.KEYS:
        Draft202012Validator.check_schema(documents.schema(key))


def test_not_an_object_and_several_errors() -> None:
    assert [(e.field, e.rule) for e in documents.validate("routing", "[]").errors] == [
        ("<document>", "type")
    ]
    checked = documents.validate("routing", json.dumps({"default": "x", "a": 1, "b": 2}))
    assert [(e.field, e.rule) for e in checked.errors] == [
        ("a", "additionalProperties"),
        ("b", "additionalProperties"),
        ("default", "enum"),
        ("version", "required"),
    ]


def test_diff() -> None:
    old = {"version": 1, "default": "sync", "rules": [{"pattern": "queued", "side": "BUY"}]}
    new = {"version": 1, "default": "queued", "rules": [{"pattern": "queued"}]}
    assert documents.diff_text(old, new) == [
        'default: "sync" -> "queued"',
        'rules.0.side: "BUY" -> (absent)',
    ]
    assert documents.diff_text(None, {"version": 1}) == ["version: (absent) -> 1"]
    assert documents.diff_text({"version": 1}, None) == ["version: 1 -> (absent)"]
    assert documents.diff_text(new, new) == []


def _order(**kw: Any) -> Order:
    fields: dict[str, Any] = {
        "client_order_id": "o-1",
        "account": "ACC1",
        "symbol": "AAPL",
        "side": "BUY",
        "order_type": "LIMIT",
        "quantity": "1",
        "limit_price": "10",
        "time_in_force": "GTC",
    }
    fields.update(kw)
    if fields["order_type"] == "MARKET":
        fields.pop("limit_price")
        fields["time_in_force"] = "IOC"
    return Order(**fields)


def test_routing_first_matching_rule_else_default() -> None:
    routing = Routing.from_document(
        {
            "version": 1,
            "default": "queued",
            "rules": [
                {"pattern": "sync", "order_type": "MARKET"},
                {"pattern": "sync", "symbol": "MSFT", "side": "SELL"},
            ],
        },
        revision=7,
    )
    assert routing.revision == 7
    assert routing.route(_order(order_type="MARKET")) == "sync"
    assert routing.route(_order()) == "queued"
    assert routing.route(_order(symbol="MSFT", side="SELL")) == "sync"
    assert routing.route(_order(symbol="MSFT", side="BUY")) == "queued"
    assert DEFAULT_ROUTING.route(_order()) == "sync"
    assert DEFAULT_ROUTING.route(_order(order_type="MARKET")) == "sync"


async def test_slots_resize_up_wakes_waiters_and_down_drops_nothing() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert slots.locked()
    slots.resize(2)
    await asyncio.wait_for(waiter, 1)
    assert slots.taken == 2
    slots.resize(1)  # both stay taken; the next one waits until one is released, then another
    assert slots.taken == 2
    assert slots.locked()
    third = asyncio.create_task(slots.acquire())
    slots.release()
    await asyncio.sleep(0)
    assert not third.done()  # 1 taken of 1
    slots.release()
    await asyncio.wait_for(third, 1)
    assert slots.taken == 1


async def test_slots_cancelled_waiter_gives_back_nothing_it_did_not_get() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    assert slots.taken == 0
    assert not slots.locked()
