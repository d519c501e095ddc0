"""JetStream's answers to queued orders, as ``enqueue_batch`` reads them off its ack
subscription: every kind of answer maps to a ``QueuedOrder`` or to the typed error (and its
retry class) that the rest of the client relies on."""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from bridge import (
    BackpressureError,
    OutcomeUnknownError,
    PublishError,
    QueuedOrder,
    StreamFullError,
)
from bridge.client import _batch_outcome, _queued_order
from bridge.retry import is_transient


def answer(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(NatsConnection(), subject="_INBOX.x.1", data=data, headers=headers)


def test_ack_becomes_queued_order() -> None:
    msg = answer(json.dumps({"stream": "ORDERS", "seq": 42, "duplicate": True}).encode())
    queued = _queued_order(msg, "o-1", "cid-1")
    assert (queued.client_order_id, queued.stream, queued.seq, queued.duplicate) == (
        "o-1",
        "ORDERS",
        42,
        True,
    )


def test_stream_full_is_refused_for_good() -> None:
    error = {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}
    with pytest.raises(StreamFullError) as info:
        _queued_order(answer(json.dumps({"error": error}).encode()), "o-2", "cid-2")
    assert (info.value.client_order_id, info.value.correlation_id) == ("o-2", "cid-2")
    assert not is_transient(info.value)


def test_no_stream_leader_is_transient() -> None:
    with pytest.raises(PublishError) as info:
        _queued_order(answer(b"", {"Status": "503"}), "o-3", "cid-3")
    assert is_transient(info.value)
    assert "no JetStream stream answered" in str(info.value)


def test_unreadable_answer_is_a_clear_error() -> None:
    with pytest.raises(PublishError, match="unreadable JetStream answer") as info:
        _queued_order(answer(b"not json"), "o-4", "cid-4")
    assert not is_transient(info.value)
    assert info.value.correlation_id == "cid-4"


def _queued(cid: str) -> QueuedOrder:
    return QueuedOrder(client_order_id=cid, stream="ORDERS", seq=1, duplicate=False)


def test_batch_failure_is_the_earliest_orders_not_the_backpressure_after_it() -> None:
    """A batch refused by a full stream and then stopped by backpressure raises the refusal."""
    full = StreamFullError("full", client_order_id="o-2")
    stopped = BackpressureError("no slot", client_order_id="o-3")
    queued, unknown, failure = _batch_outcome([_queued("o-1"), full], stopped)
    assert failure is full
    assert [q.client_order_id for q in queued] == ["o-1"]
    assert unknown == ()


def test_backpressure_alone_is_raised_when_every_sent_order_was_stored() -> None:
    """With no order failing, the backpressure that stopped the batch is what is raised."""
    stopped = BackpressureError("no slot", client_order_id="o-2")
    queued, _, failure = _batch_outcome([_queued("o-1")], stopped)
    assert failure is stopped
    assert len(queued) == 1


def test_unconfirmed_orders_are_reported_unknown_not_refused() -> None:
    """Orders sent without a confirmation are listed in ``unknown``, apart from refusals."""
    lost = OutcomeUnknownError("no answer", client_order_id="o-2")
    full = StreamFullError("full", client_order_id="o-3")
    queued, unknown, failure = _batch_outcome([_queued("o-1"), lost, full], None)
    assert failure is lost
    assert unknown == ("o-2",)
    assert [q.client_order_id for q in queued] == ["o-1"]
