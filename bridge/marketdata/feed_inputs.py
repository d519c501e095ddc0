"""``MarketInputs``: a flow-controlled input stream from the orchestrator into the engine.

::

    async with bridge.market_inputs() as inputs:
        await inputs.send([ReferencePrice("AAPL", Decimal("101.25"))])   # waits for credit
        await inputs.try_send([...])                                     # NoCreditError at once

Credit, as the protocol says (``schemas/bridge/v1/market_data.proto``): the stream opens with a
``FeedOpen`` request to ``feed_open``; the engine answers with a ``FeedGrant``: messages up to
``granted_through`` may be sent. Each ``FeedMessage`` (sequence 1, 2, 3 ...) goes to
``feed_data(stream_id)`` with this stream's grant inbox as reply subject, and the engine sends
a new grant there whenever it has applied half a window. ``send`` waits (up to
``credit_timeout``) for a grant that covers the next sequence, then publishes; ``try_send``
does not wait. Without credit both raise ``NoCreditError`` and nothing is sent: the sender
never runs ahead of the engine and holds no queue of its own (bounded memory on both sides).
Inputs the engine refused (an unknown symbol, a bad price) come back in the grants' errors:
``refused`` keeps the most recent ones.

Each message carries its own reply subject (``<grant inbox>.<sequence>``, all under one
subscription): the engine may publish to an orchestrator's inbox only in response to a message
that named it (``allow_responses``: one response per delivery), and the server keys that
permission by subject, so messages sharing one reply subject would let the engine answer only
the last of those delivered before it answered (a grant due at message 2 of a burst of 4 would
use up the permission that message 4's grant needs).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Self

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from bridge import contract
from bridge._subjects import check_token
from bridge.errors import (
    EngineUnavailableError,
    FieldIssue,
    InvalidOrderError,
    NoCreditError,
    ProtocolError,
)
from bridge.logs import get_logger
from bridge.models import MAX_SCALE, MAX_VALUE, decimal_to_proto
from bridge.transport import Subscription
from bridge.v1 import market_data_pb2

if TYPE_CHECKING:
    from bridge._connection import Connection

log = get_logger("bridge.marketdata")

_SYMBOL = re.compile(contract.SYMBOL_PATTERN)
_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_REFUSED = 1000
"""Refusals ``MarketInputs.refused`` keeps (the most recent)."""
_GRANT_BUFFER = 64  # grants are few (one per half window); a full buffer only delays credit


@dataclass(frozen=True, slots=True)
class ReferencePrice:
    """A price the engine's risk checks use for ``symbol`` instead of its configured
    ``reference_price`` (market orders' notional). Checked when built (``InvalidOrderError``)."""

    symbol: str
    price: Decimal

    def __post_init__(self) -> None:
        check_token(self.symbol, "symbol", _SYMBOL, "reference price")
        price = self.price
        problem = None
        if not isinstance(price, Decimal) or not price.is_finite():
            problem = ("decimal_type", "a finite Decimal is required (no float)")
        elif price <= 0 or price > MAX_VALUE:
            problem = ("greater_than", f"must be > 0 and at most {MAX_VALUE}")
        elif -int(price.normalize().as_tuple().exponent) > MAX_SCALE:
            problem = ("decimal_max_places", f"at most {MAX_SCALE} decimal places")
        if problem is not None:
            rule, message = problem
            raise InvalidOrderError([FieldIssue("price", rule, message)], model="reference price")

    def to_proto(self) -> market_data_pb2.ReferencePrice:
        return market_data_pb2.ReferencePrice(
            symbol=self.symbol, price=decimal_to_proto(self.price)
        )


class MarketInputs:
    """An open input stream into the engine (an async context manager)."""

    def __init__(
        self,
        conn: Connection,
        stream_id: str | None = None,
        *,
        credit_timeout: float | None = None,
    ) -> None:
        self.stream_id = stream_id or f"py-{uuid.uuid4().hex}"
        check_token(self.stream_id, "stream_id", _STREAM_ID, "input stream")
        self._conn = conn
        s = conn.settings
        self.credit_timeout = (
            credit_timeout if credit_timeout is not None else s.request_timeout_ms / 1000
        )
        self._request_timeout = s.request_timeout_ms / 1000
        self.granted_through = 0
        self.applied_through = 0
        self.sent_through = 0
        self.refused: deque[FieldIssue] = deque(maxlen=MAX_REFUSED)
        self._credit = asyncio.Event()
        self._granted = asyncio.Event()  # set on every grant
        self._send_lock = asyncio.Lock()
        self._inbox = ""
        self._sub: Subscription | None = None

    async def __aenter__(self) -> Self:
        transport = self._conn.open()
        self._inbox = transport.new_inbox()
        self._sub = await transport.subscribe(
            f"{self._inbox}.*", cb=self._on_grant, pending_msgs_limit=_GRANT_BUFFER
        )
        opening = market_data_pb2.FeedOpen(stream_id=self.stream_id).SerializeToString()
        try:
            data = await transport.request(
                contract.FEED_OPEN, opening, timeout=self._request_timeout, headers={}
            )
            grant = market_data_pb2.FeedGrant.FromString(data)
        except nats.errors.NoRespondersError:
            await self._close()
            raise EngineUnavailableError("no engine serves input streams") from None
        except (nats.errors.Error, TimeoutError) as exc:
            await self._close()
            raise self._no_credit(f"opening the stream failed: {exc!r}") from exc
        except DecodeError as exc:
            await self._close()
            raise ProtocolError(f"the engine's FeedGrant does not decode: {exc}") from exc
        self._take(grant)
        if self.granted_through == 0:
            await self._close()
            detail = "; ".join(str(i) for i in self.refused) or "no credit granted"
            raise self._no_credit(f"the engine refused the stream: {detail}")
        log.info(
            "bridge.input_stream_opened", stream_id=self.stream_id, granted=grant.granted_through
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        sub, self._sub = self._sub, None
        self._credit.set()  # wake senders: they find the stream closed
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, ValueError) as exc:
                log.debug("bridge.input_stream_unsubscribe_failed", error=repr(exc))

    @property
    def credit(self) -> int:
        """Messages that may be sent now without waiting."""
        return max(0, self.granted_through - self.sent_through)

    # -- sending ----------------------------------------------------------------------------

    async def send(self, prices: Sequence[ReferencePrice], *, timeout: float | None = None) -> int:
        """Send one message; waits up to ``timeout`` (default ``credit_timeout``) seconds for
        credit, then ``NoCreditError`` (nothing sent). Returns the message's sequence."""
        wait = self.credit_timeout if timeout is None else timeout
        async with self._send_lock:
            try:
                async with asyncio.timeout(wait):
                    while self._sub is not None and self.credit == 0:
                        self._credit.clear()
                        await self._credit.wait()
            except TimeoutError:
                raise self._no_credit(f"no credit within {wait:.3f}s") from None
            return await self._publish(prices)

    async def try_send(self, prices: Sequence[ReferencePrice]) -> int:
        """Send one message if credit allows it now, else ``NoCreditError`` at once."""
        async with self._send_lock:
            if self.credit == 0:
                raise self._no_credit("no credit")
            return await self._publish(prices)

    async def _publish(self, prices: Sequence[ReferencePrice]) -> int:
        if self._sub is None:
            raise self._no_credit("the input stream is closed")
        transport = self._conn.open()
        sequence = self.sent_through + 1
        message = market_data_pb2.FeedMessage(
            stream_id=self.stream_id,
            sequence=sequence,
            reference_prices=[p.to_proto() for p in prices],
            sent_unix_ns=time.time_ns(),
        )
        await transport.publish(
            contract.feed_data(self.stream_id),
            message.SerializeToString(),
            reply=f"{self._inbox}.{sequence}",
        )
        self.sent_through = sequence
        return sequence

    def _no_credit(self, why: str) -> NoCreditError:
        return NoCreditError(
            f"input stream {self.stream_id}: {why} (sent {self.sent_through}, granted "
            f"{self.granted_through}, applied {self.applied_through}); nothing was sent",
            stream_id=self.stream_id,
            granted_through=self.granted_through,
            applied_through=self.applied_through,
        )

    async def wait_applied(self, sequence: int, *, timeout: float | None = None) -> None:
        """Wait until a grant says the engine applied ``sequence`` (grants come at open and
        after every half window applied, so the last messages of a burst may not be confirmed
        until more follow). ``TimeoutError`` after ``timeout`` (default ``credit_timeout``)."""
        async with asyncio.timeout(self.credit_timeout if timeout is None else timeout):
            while self.applied_through < sequence:
                self._granted.clear()
                await self._granted.wait()

    # -- grants -----------------------------------------------------------------------------

    async def _on_grant(self, msg: Msg) -> None:
        try:
            grant = market_data_pb2.FeedGrant.FromString(msg.data)
        except DecodeError as exc:
            log.error("bridge.input_grant_undecodable", stream_id=self.stream_id, error=repr(exc))
            return
        if grant.stream_id and grant.stream_id != self.stream_id:
            return
        self._take(grant)

    def _take(self, grant: market_data_pb2.FeedGrant) -> None:
        self.granted_through = max(self.granted_through, grant.granted_through)
        self.applied_through = max(self.applied_through, grant.applied_through)
        for e in grant.errors:
            issue = FieldIssue(e.field, e.rule, e.message)
            self.refused.append(issue)
            log.warning("bridge.input_refused", stream_id=self.stream_id, error=str(issue))
        self._granted.set()
        if self.credit > 0:
            self._credit.set()
