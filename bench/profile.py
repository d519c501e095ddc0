"""How much each scenario runs: the full profile (``./dev bench``) and the smoke profile
(``--quick``). Every loop is bounded twice: by a count and by wall time, whichever ends first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """``warmup`` unmeasured operations, then at most ``count`` measured ones or ``seconds``."""

    warmup: int
    count: int
    seconds: float


@dataclass(frozen=True)
class Profile:
    name: str
    sync: Budget
    """Bridge submit -> ack/fill, one order at a time, engine idle before each order."""
    sync_b2b: Budget
    """Bridge submit -> ack, orders back to back (also the CPU-per-order measurement)."""
    signing: Budget
    """Per leg of the signing on/off comparison (4 legs, ABBA): idle-engine acks, then as many
    back to back."""
    publish: Budget
    """(b) raw JetStream publish and the bridge's enqueue_batch, each run twice (ABBA)."""
    drain_orders: int
    """Orders queued before the engine starts (its drain rate is measured on them)."""
    drain_timeout: float
    """Longest wait for the engine to work off that backlog."""
    core_orders: int
    """Orders per workload of the engine's in-process (no I/O) throughput measurement."""
    open_rates: tuple[int, ...]
    """Offered loads (orders/s) of the open-loop queued-path measurement."""
    open_seconds: float
    open_max_orders: int
    """Orders per level at most (a fast level then lasts less than ``open_seconds``)."""
    open_grace: float
    """After the last intended send, how long final reports are awaited (and late orders still
    sent) before the level ends."""
    e2e_orders: int
    """Orders of the end-to-end drain (one publisher, engine running)."""
    e2e_seconds: float
    """Deadline of the end-to-end drain, from its first publish."""
    burst_orders: int
    """Orders of one burst (one ``enqueue_batch``), as in the demo."""
    burst: Budget
    """Bursts: warm-up, measured repetitions, time."""
    sync_concurrent: Budget
    """Synchronous orders from ``sync_concurrency`` concurrent submitters."""
    sync_concurrency: int
    md_latency_orders: int
    """Orders per leg (4 legs) of the market-data latency comparison (one at a time)."""
    md_replay_updates: int
    """Recorded updates replayed per leg (6 legs) of the market-data throughput comparison."""
    config_changes: int
    """Configuration writes of the config change -> applied measurement."""
    fsync: Budget
    nats_echo: Budget
    js_echo: Budget
    grpc: Budget
    tcp: Budget


FULL = Profile(
    name="full",
    sync=Budget(warmup=200, count=2000, seconds=10.0),
    sync_b2b=Budget(warmup=200, count=2000, seconds=8.0),
    signing=Budget(warmup=100, count=1000, seconds=3.0),
    publish=Budget(warmup=300, count=6000, seconds=2.0),
    drain_orders=3000,
    drain_timeout=30.0,
    core_orders=200_000,
    open_rates=(250, 1000, 5000, 10_000, 50_000),
    open_seconds=2.0,
    open_max_orders=50_000,
    open_grace=4.0,
    e2e_orders=50_000,
    e2e_seconds=20.0,
    burst_orders=1000,
    burst=Budget(warmup=1, count=5, seconds=10.0),
    sync_concurrent=Budget(warmup=200, count=4000, seconds=4.0),
    sync_concurrency=16,
    md_latency_orders=1000,
    md_replay_updates=40_000,
    config_changes=50,
    fsync=Budget(warmup=20, count=1000, seconds=2.0),
    nats_echo=Budget(warmup=1000, count=20000, seconds=4.0),
    js_echo=Budget(warmup=100, count=3000, seconds=6.0),
    grpc=Budget(warmup=1000, count=20000, seconds=4.0),
    tcp=Budget(warmup=1000, count=20000, seconds=3.0),
)

QUICK = Profile(
    name="quick",
    sync=Budget(warmup=20, count=300, seconds=1.0),
    sync_b2b=Budget(warmup=20, count=300, seconds=1.0),
    signing=Budget(warmup=10, count=100, seconds=0.3),
    publish=Budget(warmup=50, count=600, seconds=0.5),
    drain_orders=300,
    drain_timeout=10.0,
    core_orders=20_000,
    open_rates=(1000, 10_000, 50_000),
    open_seconds=0.3,
    open_max_orders=2000,
    open_grace=1.0,
    e2e_orders=1000,
    e2e_seconds=5.0,
    burst_orders=1000,
    burst=Budget(warmup=0, count=2, seconds=2.0),
    sync_concurrent=Budget(warmup=20, count=400, seconds=1.0),
    sync_concurrency=16,
    md_latency_orders=100,
    md_replay_updates=2_000,
    config_changes=5,
    fsync=Budget(warmup=10, count=200, seconds=0.5),
    nats_echo=Budget(warmup=100, count=2000, seconds=1.0),
    js_echo=Budget(warmup=20, count=300, seconds=1.0),
    grpc=Budget(warmup=100, count=2000, seconds=1.0),
    tcp=Budget(warmup=100, count=2000, seconds=1.0),
)


def scenario_ids(profile: Profile, loops: list[str]) -> list[str]:
    """Every result id a run of ``profile`` under ``loops`` produces, in order."""
    ids = ["context.disk_fsync"]
    ids += [f"baseline.a1.nats_request.{loop}" for loop in loops]
    ids += ["baseline.a2.js_answered.asyncio", "baseline.b.js_publish", "baseline.b.replay"]
    ids += ["bridge.queued.publish", "bridge.engine.drain", "context.disk_fdatasync"]
    for loop in loops:
        ids += [f"bridge.sync.ack.{loop}", f"bridge.sync.fill.{loop}"]
        ids.append(f"bridge.sync.ack_b2b.{loop}")
    ids += [f"bridge.signing.{side}.{row}" for side in ("on", "off") for row in ("ack", "ack_b2b")]
    ids.append("bridge.diag.raw_request_engine.asyncio")
    ids += [f"bridge.queued.open_loop.{rate}" for rate in profile.open_rates]
    ids += ["bridge.queued.e2e_drain", "bridge.queued.burst", "bridge.sync.ack_concurrent.asyncio"]
    ids += ["baseline.md.latency.raw", "bridge.md.latency.bridge"]
    ids += ["baseline.md.throughput.raw", "bridge.md.throughput.bridge"]
    ids.append("bridge.md.throughput.coalesced")
    ids += ["baseline.config.apply.raw", "bridge.config.apply.engine", "bridge.config.apply.client"]
    ids += ["bridge.engine.core.market", "bridge.engine.core.cross"]
    ids += ["baseline.c.grpc_aio", "baseline.c.grpc_blocking"]
    ids += [f"baseline.d.tcp_tls.{loop}" for loop in loops]
    ids.append("baseline.d.tcp_plain.asyncio")
    return ids
