"""Runtime configuration: a document written -> applied, on each side, against the raw floor.

Each change is one signed write of document ``log_levels`` (alternating ``error`` / ``warn``
for both sides, so nothing else changes) by the operator, as ``bridge config set`` does. From
the moment before the write, three clocks stop:

* baseline: a raw nats-py KV watch of the key (the operator's) receives the revision: what any
  reader of the bucket costs at least;
* engine: the engine's ``ConfigApplied`` (side ``engine``) for that revision arrives;
* client: a running ``BridgeClient``'s ``ConfigApplied`` (side ``client``) arrives.

One change at a time (the next write only once all three have it).
"""

from __future__ import annotations

import asyncio
import json
import time

from nats.aio.msg import Msg

from bench.bridge_paths.common import REPLY_TIMEOUT, Engine, settings_for
from bench.measure import Result, Timed, new_histogram, record_ns
from bench.procs import BenchError, CpuMeter
from bridge import BridgeClient, contract
from bridge.runtime_config import store
from bridge.security.signing import Signer
from bridge.v1 import market_data_pb2
from bridge_dev.server import ServerHandle, connect_as

SIDES = ("engine", "client")


async def config_apply(handle: ServerHandle, engine: Engine, changes: int) -> list[Result]:
    """``changes`` writes; rows: raw KV watch, engine applied, client applied."""
    hists = {name: new_histogram() for name in ("raw", *SIDES)}
    signer = Signer(handle.creds.identity("operator").seed_file.read_bytes().strip())
    key = contract.CONFIG_LOG_LEVELS_KEY
    nc = await connect_as(handle.url, handle.creds, "operator")
    seen: dict[tuple[str, int], int] = {}
    arrived = asyncio.Event()

    def mark(name: str, revision: int) -> None:
        seen.setdefault((name, revision), time.perf_counter_ns())
        arrived.set()

    async def on_applied(msg: Msg) -> None:
        applied = market_data_pb2.ConfigApplied.FromString(msg.data)
        if applied.document == key:
            if not applied.applied:
                raise BenchError(f"{applied.side} refused {key}: {list(applied.errors)}")
            mark(applied.side, applied.revision)

    try:
        await nc.subscribe(contract.CONFIG_APPLIED_ALL, cb=on_applied)
        kv = await nc.jetstream().key_value(contract.CONFIG_KV_BUCKET)
        watcher = await kv.watch(key, include_history=False)

        async def watch() -> None:
            async for entry in watcher:
                if entry is not None and entry.revision is not None:
                    mark("raw", entry.revision)

        watching = asyncio.create_task(watch())
        try:
            async with BridgeClient(settings_for(handle)):
                with CpuMeter({"peer": engine.pid}) as meter:
                    for i in range(changes):
                        level = "error" if i % 2 == 0 else "warn"
                        doc = {"version": 1, "engine": level, "client": level}
                        t0 = time.perf_counter_ns()
                        revision = await store.put(nc, key, json.dumps(doc).encode(), signer)
                        names = ("raw", *SIDES)
                        async with asyncio.timeout(REPLY_TIMEOUT):
                            while not all((n, revision) in seen for n in names):
                                arrived.clear()
                                await arrived.wait()
                        for name in names:
                            record_ns(hists[name], seen[(name, revision)] - t0)
            # Leave both sides at warn (the bench logs at WARNING).
            last = {"version": 1, "engine": "warn", "client": "warn"}
            await store.put(nc, key, json.dumps(last).encode(), signer)
        finally:
            watching.cancel()
            await watcher.stop()  # type: ignore[no-untyped-call]
    finally:
        await nc.close()
    rows = []
    for name, label, group in (
        ("raw", "config write -> raw KV watch receives it", "baseline"),
        ("engine", "config write -> engine applied (ConfigApplied)", "bridge"),
        ("client", "config write -> client applied (ConfigApplied)", "bridge"),
    ):
        row = Result.latency(
            Timed(hists[name], changes, CpuMeter({})),
            id=f"{group}.config.apply.{name}",
            label=label,
            group=group,  # type: ignore[arg-type]
            notes="one signed log_levels write at a time",
            costs=False,
        )
        row.seconds = meter.wall_s
        rows.append(row)
    return rows
