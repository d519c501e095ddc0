"""Order routing: which communication pattern ``BridgeClient.send`` gives an order. Pure.

The ``routing`` document (``schemas/config/v1/routing.schema.json``) lists rules; the first rule
whose every condition (``order_type``, ``time_in_force``, ``side``, ``symbol``) matches the order
decides, else the document's ``default``. ``sync`` is request-reply (``BridgeClient.submit``:
the engine's ``OrderAck``), ``queued`` is JetStream (``BridgeClient.enqueue``: a
``QueuedOrder``).

Without a routing document (none written, or deleted) every order goes ``sync``
(:data:`DEFAULT_ROUTING`): ``send`` then behaves exactly like ``submit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.models import Order

Pattern = Literal["sync", "queued"]
SYNC: Pattern = "sync"
QUEUED: Pattern = "queued"
_CONDITIONS = ("order_type", "time_in_force", "side", "symbol")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: the pattern of the orders that match every condition it names."""

    pattern: Pattern
    conditions: tuple[tuple[str, str], ...]

    def matches(self, order: Order) -> bool:
        return all(str(getattr(order, name)) == value for name, value in self.conditions)


@dataclass(frozen=True, slots=True)
class Routing:
    """A routing rule set (from a validated ``routing`` document, or the default)."""

    default: Pattern = SYNC
    rules: tuple[Rule, ...] = ()
    revision: int = 0
    """The KV revision of the document it came from (0: the built-in default)."""

    @classmethod
    def from_document(cls, document: Mapping[str, Any], revision: int = 0) -> Routing:
        """From a document that passed ``documents.validate("routing", ...)``."""
        rules = tuple(
            Rule(
                pattern=rule["pattern"],
                conditions=tuple((n, str(rule[n])) for n in _CONDITIONS if n in rule),
            )
            for rule in document.get("rules", ())
        )
        return cls(default=document["default"], rules=rules, revision=revision)

    def route(self, order: Order) -> Pattern:
        """The pattern ``order`` takes."""
        for rule in self.rules:
            if rule.matches(order):
                return rule.pattern
        return self.default


DEFAULT_ROUTING = Routing()
"""Without a routing document: every order ``sync`` (``send`` = ``submit``)."""
