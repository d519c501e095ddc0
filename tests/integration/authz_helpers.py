"""Helpers of the engine authorization tests: raw signed (or forged) order operations, the
alerts the engine raises on ALERTS, the engine's log lines, and entitlements files."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nkeys
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from bridge import contract
from bridge.security import entitlements
from bridge.security.signing import Signer
from bridge.v1 import common_pb2, orders_pb2, security_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fresh_signer() -> tuple[Signer, bytes]:
    """A signer of a key made here (nobody's entitled key), and its seed."""
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return Signer(seed), seed


def new_order(account: str, client_order_id: str, qty: int = 1) -> bytes:
    """A valid market order (AAPL, IOC), encoded."""
    return orders_pb2.NewOrder(
        client_order_id=client_order_id,
        account=account,
        symbol="AAPL",
        side=orders_pb2.SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        quantity=common_pb2.Decimal(units=qty, scale=0),
        time_in_force=orders_pb2.TIME_IN_FORCE_IOC,
    ).SerializeToString()


def status_request(account: str, client_order_id: str) -> bytes:
    return orders_pb2.OrderStatusRequest(
        account=account, client_order_id=client_order_id
    ).SerializeToString()


def cancel_request(account: str, client_order_id: str) -> bytes:
    return orders_pb2.CancelRequest(
        account=account, client_order_id=client_order_id
    ).SerializeToString()


async def ask(
    nc: Client, subject: str, payload: bytes, headers: dict[str, str], correlation_id: str
) -> bytes:
    """One request with these headers and a correlation id; the raw answer."""
    reply = await nc.request(
        subject,
        payload,
        timeout=10,
        headers={**headers, contract.HEADER_CORRELATION_ID: correlation_id},
    )
    return bytes(reply.data)


async def signed_submit(
    nc: Client, signer: Signer, account: str, client_order_id: str
) -> orders_pb2.OrderAck:
    """A correctly signed submit of a valid order; its ack."""
    subject, payload = contract.submit(account), new_order(account, client_order_id)
    answer = await ask(nc, subject, payload, signer.headers(subject, payload), new_id("corr"))
    return orders_pb2.OrderAck.FromString(answer)


async def signed_status(
    nc: Client, signer: Signer, account: str, client_order_id: str
) -> orders_pb2.OrderStatusReply:
    subject, payload = contract.status(account), status_request(account, client_order_id)
    answer = await ask(nc, subject, payload, signer.headers(subject, payload), new_id("corr"))
    return orders_pb2.OrderStatusReply.FromString(answer)


async def wait_for_alert(
    handle: ServerHandle, correlation_id: str, timeout: float = 10
) -> tuple[str, security_pb2.SecurityAlert]:
    """The engine's alert about the operation with ``correlation_id``, read from ALERTS as the
    operator (subject, alert); TimeoutError if none lands within ``timeout``."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            contract.ALERTS_ENGINE, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            async with asyncio.timeout(timeout):
                while True:  # each message is read once; the timeout bounds the loop
                    m = await sub.next_msg(timeout=timeout)
                    alert = security_pb2.SecurityAlert.FromString(m.data)
                    if alert.correlation_id == correlation_id:
                        return m.subject, alert
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def violation_token(kind: int) -> str:
    """The alert subject token of a SecurityViolationKind value."""
    name = security_pb2.SecurityViolationKind.Name(kind)  # type: ignore[arg-type]
    return name.removeprefix("SECURITY_VIOLATION_KIND_").lower()


def log_lines(engine: EngineProcess) -> list[dict[str, Any]]:
    """The engine's JSON log lines so far."""
    out = []
    for line in engine.log_file.read_text("utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


async def wait_for_log(
    engine: EngineProcess, message: str, count: int = 1, timeout: float = 10
) -> dict[str, Any]:
    """Wait until the engine has logged ``message`` ``count`` times; the last such line."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in log_lines(engine) if line.get("message") == message]
        if len(found) >= count:
            return found[-1]
        if time.monotonic() > deadline:
            raise TimeoutError(f"engine did not log {message!r} x{count}:\n{engine.log_tail()}")
        await asyncio.sleep(0.05)  # the log file is written by the engine's reader thread


def entitlements_file(
    path: Path, handle: ServerHandle, extra: Iterable[tuple[str, str, list[str]]]
) -> Path:
    """The dev entitlements (resolved) plus ``extra`` orchestrators (name, key, accounts),
    written to ``path``."""
    base = entitlements.load(handle.creds.entitlements_file)
    added = tuple(
        entitlements.Identity(
            name=name,
            role="orchestrator",
            nkey=key,
            certificate_subject=f"CN={name}",
            accounts=tuple(accounts),
        )
        for name, key, accounts in extra
    )
    whole = base.model_copy(update={"identities": base.identities + added})
    path.write_text(whole.to_toml(), "utf-8")
    return path


async def orchestrator(handle: ServerHandle) -> Client:
    """A raw connection of the orchestrator role (its own signatures are added per message)."""
    return await connect_as(handle.url, handle.creds, "orchestrator")
