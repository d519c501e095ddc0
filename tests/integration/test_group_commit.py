"""Group commit on the real engine and server: synchronous orders received together share one
journal entry (stream JOURNAL), each answered only once that entry is stored; a lone order is a
group of one (one journal write). The entries are read back and decoded as the engine wrote
them (bridge.engine.v1.JournalEntry has no Python module: the fields read here are the
entry's record keys, field 3 / 1)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections import Counter

import pytest
from nats.js.errors import NotFoundError

from bridge import AckStatus, BridgeClient, BridgeSettings, contract
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as
from tests.faults.harness import stored_reports
from tests.integration.test_order_path import collect_until_final, market, new_id

pytestmark = pytest.mark.integration

ORDERS = 24


def _fields(data: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields of a protobuf message (varints skipped): (number, bytes)."""
    out: list[tuple[int, bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            n = varint()
            out.append((number, data[i : i + n]))
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


async def journal_keys(handle: ServerHandle, engine_id: str) -> list[list[str]]:
    """The record keys of every journal entry of ``engine_id``, entry by entry."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        info = await js.stream_info(contract.JOURNAL_STREAM)
        entries: list[list[str]] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(contract.JOURNAL_STREAM, seq)
            except NotFoundError:
                continue
            if msg.subject != contract.journal(engine_id) or msg.data is None:
                continue
            records = [body for number, body in _fields(msg.data) if number == 3]
            keys = [body.decode() for r in records for number, body in _fields(r) if number == 1]
            entries.append(keys)
        return entries
    finally:
        await nc.close()


async def engine_out_msgs(handle: ServerHandle) -> int:
    """Messages the server has sent to engine connections (its monitoring endpoint)."""
    url = f"{handle.monitor_url}/connz?limit=1024"

    def fetch() -> int:
        with urllib.request.urlopen(url, timeout=5) as resp:
            conns = json.load(resp).get("connections") or []
        return sum(int(c.get("out_msgs", 0)) for c in conns if c.get("name") == "bridge-engine")

    return await asyncio.to_thread(fetch)


async def until_delivered(handle: ServerHandle, at_least: int, timeout: float = 20) -> None:
    """Wait until the server has sent engine connections at least ``at_least`` messages."""
    async with asyncio.timeout(timeout):
        while await engine_out_msgs(handle) < at_least:  # noqa: ASYNC110 (a server's count)
            await asyncio.sleep(0.02)


async def test_orders_received_together_share_one_journal_entry(
    nats_server: ServerHandle, settings: BridgeSettings, engine: EngineProcess
) -> None:
    """24 synchronous orders sent while the engine is stopped (SIGSTOP) reach it together: it
    takes them as few commit groups, so fewer journal entries than orders hold their records,
    every order's record is journaled exactly once, every ack is ACCEPTED and every order is
    filled exactly once."""
    account = new_id("G").upper()
    orders = [market(account, qty="1") for _ in range(ORDERS)]
    pid = engine.pid
    assert pid is not None
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        delivered = await engine_out_msgs(nats_server)
        os.kill(pid, signal.SIGSTOP)
        try:
            pending = [asyncio.ensure_future(bridge.submit(o)) for o in orders]
            # Every request sent to the engine's connection before it runs again.
            await until_delivered(nats_server, delivered + ORDERS)
        finally:
            os.kill(pid, signal.SIGCONT)
        acks = await asyncio.gather(*pending)
        await collect_until_final(stream, {o.client_order_id for o in orders})
    assert [a.status for a in acks] == [AckStatus.ACCEPTED] * ORDERS
    ids = {f"{account}.{o.client_order_id}" for o in orders}
    entries = [
        keys for keys in await journal_keys(nats_server, engine.engine_id) if ids & set(keys)
    ]
    journaled = Counter(k for keys in entries for k in keys if k in ids)
    assert set(journaled) == ids
    assert set(journaled.values()) == {1}, "an order's record journaled twice"
    assert len(entries) < ORDERS, f"no two orders shared an entry: {len(entries)} entries"
    reports = await stored_reports(nats_server, account)
    filled = orders_pb2.ORDER_STATUS_FILLED
    finals = Counter(r.client_order_id for r in reports if r.order_status == filled)
    assert finals == Counter({o.client_order_id: 1 for o in orders})


async def test_a_lone_order_is_one_journal_entry(
    nats_server: ServerHandle, settings: BridgeSettings, engine: EngineProcess
) -> None:
    """One order, one group: its record (and the seeded makers it traded with) in exactly one
    journal entry, written before its ack came back."""
    account = new_id("L").upper()
    order = market(account, qty="1")
    async with BridgeClient(settings) as bridge:
        ack = await bridge.submit(order)
        assert ack.status is AckStatus.ACCEPTED
        key = f"{account}.{order.client_order_id}"
        entries = [k for k in await journal_keys(nats_server, engine.engine_id) if key in k]
    assert len(entries) == 1
