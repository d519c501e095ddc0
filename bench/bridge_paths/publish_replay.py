"""Queued publish, the bridge against raw nats-py on the *same messages*: a first, unmeasured
``enqueue_batch`` records every message the client publishes into ORDERS (subject, headers,
payload) through a thin wrapper of its transport; the raw row then publishes exactly those
messages with nats-py's ``js.publish_async`` (1024 in flight, like the client's
``max_inflight``).

Nothing here assumes how the client packs orders into messages (one message an order today;
an OrderBatch of many orders on another subject later): whatever the client publishes into
ORDERS is what is replayed, and both rows count *orders* per second and Python CPU per *order*.
The one difference: each replayed message gets a fresh ``Nats-Msg-Id`` of the same length, or
JetStream would answer it as a duplicate of the recording pass instead of storing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.js.api import PubAck

from bench.bridge_paths.common import (
    REPLY_TIMEOUT,
    make_orders,
    operator,
    purge_orders,
    server_pid,
    settings_for,
)
from bench.measure import Result
from bench.procs import BenchError, CpuMeter
from bench.profile import Budget
from bridge import BridgeClient, contract
from bridge.transport import NatsTransport
from bridge_dev.server import ServerHandle, connect_as


@dataclass(frozen=True)
class Message:
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class Recording:
    """The messages one ``enqueue_batch`` of ``orders`` orders published into ORDERS."""

    orders: int
    messages: list[Message] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(len(m.data) for m in self.messages)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


class RecordingTransport(NatsTransport):
    """``NatsTransport`` that also keeps every message published on a subject of ``patterns``
    (the ORDERS stream's subjects) while ``recording`` is on."""

    def __init__(self, patterns: Sequence[str]) -> None:
        super().__init__()
        self.patterns = list(patterns)
        self.recording = False
        self.messages: list[Message] = []

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        if self.recording and any(subject_matches(p, subject) for p in self.patterns):
            self.messages.append(Message(subject, bytes(data), dict(headers or {})))
        await super().publish(subject, data, reply=reply, headers=headers)


async def orders_subjects(handle: ServerHandle) -> list[str]:
    async with operator(handle) as jsm:
        info = await jsm.stream_info(contract.ORDERS_STREAM)
    return list(info.config.subjects or [])


async def record_enqueue(handle: ServerHandle, budget: Budget, run: str) -> Recording:
    """One unmeasured ``enqueue_batch`` of ``budget.count`` orders (as the measured bridge
    runs send them), recorded; ORDERS is purged afterwards."""
    transport = RecordingTransport(await orders_subjects(handle))
    orders = make_orders(f"{run}c", budget.count, "QUEUED")
    async with BridgeClient(settings_for(handle), transport=transport) as bridge:
        transport.recording = True
        await asyncio.wait_for(bridge.enqueue_batch(orders), REPLY_TIMEOUT * 4)
        transport.recording = False
    await purge_orders(handle)
    if not transport.messages:
        raise BenchError("enqueue_batch published nothing into ORDERS (subjects changed?)")
    return Recording(len(orders), transport.messages)


def _fresh_id(old: str, tag: str, i: int) -> str:
    """A ``Nats-Msg-Id`` unique to this replay, as long as ``old`` where it can be."""
    width = max(1, len(old) - len(tag) - 1)
    return f"{tag}-{i:0{width}d}"


def _renamed(recording: Recording, tag: str) -> list[Message]:
    """The recording with a fresh ``Nats-Msg-Id`` per message (and, should the client ever
    publish atomic batches, a fresh ``Nats-Batch-Id`` per batch, shared as before)."""
    out = []
    batches: dict[str, str] = {}
    for i, m in enumerate(recording.messages):
        headers = dict(m.headers)
        if contract.HEADER_MSG_ID in headers:
            headers[contract.HEADER_MSG_ID] = _fresh_id(headers[contract.HEADER_MSG_ID], tag, i)
        batch = headers.get(contract.HEADER_BATCH_ID)
        if batch is not None:
            if batch not in batches:
                batches[batch] = _fresh_id(batch, f"{tag}b", len(batches))
            headers[contract.HEADER_BATCH_ID] = batches[batch]
        out.append(Message(m.subject, m.data, headers))
    return out


async def publish_replay(
    handle: ServerHandle, recording: Recording, warmup: int, tag: str
) -> Result:
    """nats-py ``js.publish_async`` of the recorded messages (fresh ids), 1024 in flight; after
    ``warmup`` unmeasured messages, the whole recording, timed. ORDERS is purged afterwards."""
    warm = _renamed(
        Recording(0, recording.messages[: min(warmup, len(recording.messages))]), f"{tag}w"
    )
    messages = _renamed(recording, tag)
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    js = nc.jetstream(timeout=REPLY_TIMEOUT, publish_async_max_pending=1024)

    async def send(batch: list[Message]) -> list[PubAck | BaseException]:
        futures = [await js.publish_async(m.subject, m.data, headers=m.headers) for m in batch]
        return await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), REPLY_TIMEOUT * 4
        )

    try:
        await send(warm)
        with CpuMeter({"nats": server_pid(handle)}) as meter:
            results = await send(messages)
    finally:
        await nc.close()
    errors = sum(1 for r in results if isinstance(r, BaseException))
    if errors:
        raise BenchError(f"raw replay: {errors} of {len(results)} messages not stored")
    res = Result.throughput(
        meter,
        recording.orders,
        id="baseline.b.replay",
        label="(b') raw publish_async of the client's messages",
        group="baseline",
        notes=f"{len(messages)} messages for {recording.orders} orders, 1024 in flight",
        extra={
            "messages": len(messages),
            "payload_bytes": recording.bytes,
        },
    )
    await purge_orders(handle)
    return res
