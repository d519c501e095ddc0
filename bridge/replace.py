"""``Replace``: amend a resting order's price and/or quantity (FIX OrderCancelReplaceRequest).

Validated on construction like ``Order``: bad input raises ``InvalidOrderError`` naming every
bad field, before anything is sent. What the engine does with it (``BridgeClient.replace``):

* a price change or a quantity increase loses the order's time priority (it goes to the back
  of its new level, and a new price that crosses the book trades at once, as a new order
  would); a quantity decrease alone keeps it;
* ``quantity`` is the new total, fills included: at or below what is already filled it ends
  the order (FILLED, ``order_qty`` = ``cum_qty``);
* the reports PENDING_REPLACE then REPLACED (and any fill) carry ``client_order_id`` = this
  replace's id and ``orig_client_order_id`` = the id it names; they keep coming on the
  order's original id's report subject (``BridgeClient.reports(account, original_id)``);
* idempotent by ``client_order_id``: re-sending it is answered with the original ack
  (``duplicate=True``) and never applies it twice; afterwards cancel, status and a further
  replace may name the order by either id.
"""

from __future__ import annotations

import time
from typing import Annotated, Self

from pydantic import Field, model_validator

from bridge.models import (
    MAX_SCALE,
    MAX_VALUE,
    Account,
    ExactDecimal,
    Identifier,
    _field_error,
    _Model,
    decimal_to_proto,
)
from bridge.v1 import lifecycle_pb2

Amount = Annotated[ExactDecimal | None, Field(gt=0, le=MAX_VALUE, decimal_places=MAX_SCALE)]


class Replace(_Model):
    """A replace of a resting LIMIT order: a new quantity, a new limit price, or both."""

    account: Account
    orig_client_order_id: Identifier
    """The order to amend: its client order id, or the id of a replace accepted for it."""
    client_order_id: Identifier
    """This replace's own id: unique per account like an order's, never reused."""
    quantity: Amount = None
    """New total quantity, fills included; None keeps it."""
    limit_price: Amount = None
    """New limit price; None keeps it."""
    created_at_unix_ns: int = Field(default_factory=time.time_ns, ge=0)

    @model_validator(mode="after")
    def _amends_something(self) -> Self:
        if self.quantity is None and self.limit_price is None:
            raise _field_error(
                "quantity",
                "amends_something",
                "a replace needs a new quantity, a new limit_price, or both",
            )
        if self.client_order_id == self.orig_client_order_id:
            raise _field_error(
                "client_order_id",
                "unique",
                "a replace needs an id of its own, not the id of the order it amends",
            )
        return self

    def to_proto(self) -> lifecycle_pb2.ReplaceRequest:
        msg = lifecycle_pb2.ReplaceRequest(
            account=self.account,
            orig_client_order_id=self.orig_client_order_id,
            client_order_id=self.client_order_id,
            created_at_unix_ns=self.created_at_unix_ns,
        )
        if self.quantity is not None:
            msg.quantity.CopyFrom(decimal_to_proto(self.quantity))
        if self.limit_price is not None:
            msg.limit_price.CopyFrom(decimal_to_proto(self.limit_price))
        return msg
