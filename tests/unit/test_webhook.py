"""The webhook sender: batches, retries what is worth retrying, never blocks submit."""

from __future__ import annotations

import asyncio
import json

import httpx

from bridge.security import alerts
from bridge.security.webhook import WebhookSender
from bridge.v1 import security_pb2 as pb

URL = "http://receiver.test/alerts"


def _alert(n: int) -> pb.SecurityAlert:
    return alerts.new_alert(pb.SECURITY_VIOLATION_KIND_REPLAYED, alert_id=f"a{n}", identity="x")


def _sender(handler: object, **kw: object) -> WebhookSender:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return WebhookSender(URL, client=client, initial_delay_s=0.0, max_delay_s=0.0, **kw)  # type: ignore[arg-type]


async def test_delivers_queued_alerts_in_one_body() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.headers["content-type"] == "application/json"
        return httpx.Response(200)

    sender = _sender(handler)
    for n in range(3):
        assert sender.submit(_alert(n))  # queued before the worker runs: one batch
    await sender.start()
    await sender.close()
    assert sender.delivered == 3
    assert len(bodies) == 1
    alerts_sent = bodies[0]["alerts"]
    assert isinstance(alerts_sent, list)
    assert [a["labels"]["alert_id"] for a in alerts_sent] == ["a0", "a1", "a2"]


async def test_retries_server_errors_then_succeeds() -> None:
    statuses = [503, 500, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(statuses.pop(0))

    sender = _sender(handler, max_attempts=3)
    assert await sender.deliver([_alert(1)])
    assert statuses == []
    await sender.close()


async def test_gives_up_after_the_attempt_limit() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    sender = _sender(handler, max_attempts=4)
    assert not await sender.deliver([_alert(1)])
    assert calls == 4
    assert sender.failed == 1
    await sender.close()


async def test_client_errors_are_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400)

    sender = _sender(handler, max_attempts=5)
    assert not await sender.deliver([_alert(1)])
    assert calls == 1
    await sender.close()


async def test_a_full_queue_drops_without_blocking() -> None:
    release = asyncio.Event()
    posting = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        posting.set()
        await release.wait()
        return httpx.Response(200)

    sender = _sender(handler, queue_size=2, max_batch=1)
    await sender.start()
    assert sender.submit(_alert(0))
    await asyncio.wait_for(posting.wait(), 5)  # the worker took a0 and waits in its POST
    assert sender.submit(_alert(1))
    assert sender.submit(_alert(2))
    assert not sender.submit(_alert(3))  # full: dropped at once, never awaited
    assert sender.dropped == 1
    release.set()
    await sender.close()
    assert sender.delivered == 3
