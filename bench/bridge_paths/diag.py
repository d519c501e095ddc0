"""Diagnostic: the synchronous back-to-back loop without ``BridgeClient``, to split the
client library's cost from the engine's."""

from __future__ import annotations

from bench.bridge_paths.common import (
    REPLY_TIMEOUT,
    SYNC_ACCOUNT,
    Engine,
    make_orders,
    server_pid,
)
from bench.measure import Result, closed_loop
from bench.profile import Budget
from bridge import contract
from bridge_dev.server import ServerHandle, connect_as


async def raw_request_to_engine(
    handle: ServerHandle, engine: Engine, budget: Budget, run: str
) -> Result:
    """Diagnostic: the back-to-back loop without ``BridgeClient``: plain nats-py requests with
    pre-serialized NewOrders (no headers) to the same engine. The difference to the bridge's
    back-to-back row is the client library; the difference to (a1) is the engine's work."""
    orders = make_orders(f"{run}r", budget.warmup + budget.count)
    payloads = [o.to_proto().SerializeToString() for o in orders]
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    subject = contract.submit(SYNC_ACCOUNT)

    async def one(i: int) -> None:
        await nc.request(subject, payloads[i], timeout=REPLY_TIMEOUT)

    try:
        timed = await closed_loop(one, budget, {"peer": engine.pid, "nats": server_pid(handle)})
    finally:
        await nc.close()
    return Result.latency(
        timed,
        id="bridge.diag.raw_request_engine.asyncio",
        label="diag: raw nats-py request -> engine, back to back",
        group="bridge",
        notes="no BridgeClient, no headers",
    )
