"""Partitioned engines (engine-rs/src/partitions.rs) on the 3-node cluster (R3 streams), three
engines sharing the 8 partitions 3/3/2, under crossing load from three clients on both paths
(tests/faults/partitions_harness.py), one fault each: none, kill -9 of an engine, SIGSTOP of
an engine past its lease TTL then SIGCONT (it must be fenced), a fourth engine joining, a
rolling restart, and a NATS node killed while an engine's partitions are taken over.

Each test waits for events (the lease bucket's watch, the report stream, /readyz), is bounded
by deadlines, counts sent / acked / lost / duplicated / over-filled from the durable record,
checks the FIX invariants (cum + leaves = qty while live, report sequences, unique exec ids,
bought = sold, every order of a crossing pair FILLED) and prints one ``FAULT`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bridge_dev.cluster import LocalNatsCluster
from bridge_dev.engine import EngineProcess, lease_ttl
from tests.faults.harness import new_account, stored_entries
from tests.faults.partitions_harness import (
    Lease,
    LeaseWatch,
    Load,
    all_owned_by,
    check,
    engine,
    journal_entries,
    live_pids,
    prepare,
    share_is,
    start,
)

pytestmark = pytest.mark.integration

# Orders acked before a fault and after it (so that the fault lands under load and the
# engines are seen serving again afterwards).
BEFORE, AFTER = 60, 60
TAKEOVER_LIMIT_S = 6 * lease_ttl()


@asynccontextmanager
async def three_engines(
    cluster: LocalNatsCluster, tmp_path: Path
) -> AsyncIterator[tuple[list[EngineProcess], LeaseWatch]]:
    """Engines A, B, C sharing the partitions 3/3/2 (watched); each stopped at the end, with
    exit code 0 unless the test killed it."""
    handle = cluster.handle
    await prepare(handle)
    engines = [engine(handle, tmp_path, f"engine-{n}") for n in "ABC"]
    async with LeaseWatch(handle) as watch:
        try:
            await start(*engines)
            await watch.wait(share_is([3, 3, 2]), TAKEOVER_LIMIT_S, "a share of 3/3/2")
            yield engines, watch
        finally:
            for e in engines:
                await asyncio.to_thread(e.stop)


def codes_ok(engines: Sequence[EngineProcess]) -> None:
    for e in engines:
        if e.running:
            code = e.stop()
            assert code == 0, f"{e.engine_id} exited {code}:\n{e.log_tail()}"


async def under_load(load: Load) -> asyncio.Task[None]:
    task = asyncio.create_task(load.run())
    await load.until_acked(BEFORE, 120, f"{BEFORE} orders acked before the fault")
    return task


async def finish(load: Load, task: asyncio.Task[None]) -> None:
    acked = len(load.acked)
    await load.until_acked(acked + AFTER, 120, f"{AFTER} orders acked after the fault")
    load.stop()
    await asyncio.wait_for(task, 120)


def held_by(watch: LeaseWatch, e: EngineProcess) -> dict[int, int]:
    """Partition → epoch of what ``e``'s process holds."""
    return {p: o.epoch for p, o in watch.owners.items() if o.pid == e.pid}


async def test_crossing_orders_from_several_clients_meet_at_one_book(
    cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    load = Load(cluster.handle, new_account("PX"))
    async with three_engines(cluster, tmp_path) as (engines, watch):
        before = watch.render()
        await asyncio.wait_for(load.run(pairs=120), 120)
        await check(cluster.handle, load, "3 engines: crossing, sync + queued", None)
        codes_ok(engines)
    print(f"ownership: {before}")


async def test_engine_killed_its_partitions_move(cluster: LocalNatsCluster, tmp_path: Path) -> None:
    load = Load(cluster.handle, new_account("PK"))
    async with three_engines(cluster, tmp_path) as (engines, watch):
        task = await under_load(load)
        victim = engines[0]
        moved = held_by(watch, victim)
        before = watch.render()
        killed_at = time.monotonic()
        victim.kill()
        await watch.wait(all_owned_by(live_pids(engines)), TAKEOVER_LIMIT_S, "takeover")
        takeover = time.monotonic() - killed_at
        after = watch.render()
        await finish(load, task)
        await check(cluster.handle, load, "engine kill -9", takeover)
        codes_ok(engines[1:])
    assert moved, "the killed engine held no partition"
    print(f"before: {before}\nafter:  {after}")


async def test_engine_frozen_past_its_lease_is_fenced(
    cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    handle = cluster.handle
    load = Load(handle, new_account("PS"))
    async with three_engines(cluster, tmp_path) as (engines, watch):
        task = await under_load(load)
        victim = engines[0]
        assert victim.pid is not None
        old = held_by(watch, victim)
        others = live_pids(engines[1:])
        stopped_at = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)
        try:

            def taken(owners: dict[int, Lease]) -> bool:
                return all(p in watch.owners and watch.owners[p].pid in others() for p in old)

            await watch.wait(taken, TAKEOVER_LIMIT_S, "the frozen engine's partitions taken")
            takeover = time.monotonic() - stopped_at
            new = {p: watch.owners[p].epoch for p in old}
            # What EXECUTIONS holds at the takeover: a report stored after this is checked
            # against the journal entry it comes from.
            at_takeover = max((s for s, _ in await stored_entries(handle, None)), default=0)
            # Orders keep coming while it is frozen: some are delivered to it (its
            # subscriptions and its pull are still registered) and wait for it to wake.
            acked = len(load.acked)
            await load.until_acked(acked + 30, 60, "orders acked while the engine is frozen")
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        # Awake, it finds its leases lost (or its journal fenced), and rejoins: the shares
        # come back to 3/3/2 with it holding some again.
        await watch.wait(
            lambda o: share_is([3, 3, 2])(o) and any(x.pid == victim.pid for x in o.values()),
            TAKEOVER_LIMIT_S,
            "the woken engine rejoining",
        )
        await finish(load, task)
        checked = await check(handle, load, "engine SIGSTOP past lease, SIGCONT", takeover)
        log = victim.log_file.read_text(errors="replace")
        assert "partition lease lost" in log or "fenced" in log, victim.log_tail()
        # No report of its former partitions comes from it after the takeover: every report
        # of them is in a journal entry of their partition, each partition's epochs never go
        # back (the stale owner appended nothing after the new owner's fence), and a report
        # stored after the takeover comes from an entry of the new epoch or one stored before
        # the fence (a fact the new owner re-projects).
        stored = {r.exec_id: s for s, r in await stored_entries(handle, None)}
        late = 0
        for p, old_epoch in old.items():
            entries = await journal_entries(handle, f"p{p}")
            epochs = [e.epoch for e in entries]
            assert epochs == sorted(epochs), f"p{p}: epochs go back: {epochs[-20:]}"
            fence = next(e.seq for e in entries if e.epoch == new[p])
            by_exec = {x: e for e in entries for x in e.exec_ids}
            for r in checked.reports:
                if r.engine_id != f"p{p}":
                    continue
                e = by_exec.get(r.exec_id)
                assert e is not None, f"p{p}: report {r.exec_id} is in no journal entry"
                if stored[r.exec_id] > at_takeover:
                    late += 1
                    assert e.epoch != old_epoch or e.seq < fence, (p, r.exec_id, e)
        codes_ok(engines)
    print(f"fenced partitions {sorted(old)}: {late} of their reports stored after the takeover")


async def test_a_fourth_engine_joins_and_partitions_rebalance(
    cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    load = Load(cluster.handle, new_account("PJ"))
    async with three_engines(cluster, tmp_path) as (engines, watch):
        fourth = engine(cluster.handle, tmp_path, "engine-D")
        try:
            task = await under_load(load)
            before = watch.render()
            joined_at = time.monotonic()
            await asyncio.gather(
                asyncio.to_thread(fourth.start),
                watch.wait(share_is([2, 2, 2, 2]), TAKEOVER_LIMIT_S, "a share of 2/2/2/2"),
            )
            rebalance = time.monotonic() - joined_at
            after = watch.render()
            await finish(load, task)
            await check(cluster.handle, load, "4th engine joins (3/3/2 -> 2/2/2/2)", rebalance)
            codes_ok([*engines, fourth])
        finally:
            await asyncio.to_thread(fourth.stop)
    print(f"before: {before}\nafter:  {after}")


async def test_rolling_restart_under_load(cluster: LocalNatsCluster, tmp_path: Path) -> None:
    load = Load(cluster.handle, new_account("PR"))
    async with three_engines(cluster, tmp_path) as (engines, watch):
        task = await under_load(load)
        longest = 0.0
        for e in engines:
            stopped_at = time.monotonic()
            code = await asyncio.to_thread(e.stop)
            assert code == 0, e.log_tail()
            await watch.wait(all_owned_by(live_pids(engines)), TAKEOVER_LIMIT_S, "handover")
            longest = max(longest, time.monotonic() - stopped_at)
            await asyncio.to_thread(e.start)
            await watch.wait(share_is([3, 3, 2]), TAKEOVER_LIMIT_S, "back to 3/3/2")
        await finish(load, task)
        await check(cluster.handle, load, "rolling restart (SIGTERM) of 3 engines", longest)
        codes_ok(engines)


class Supervisor:
    """Restarts an engine that exited on its own (as systemd or Kubernetes would): an engine
    whose connection drops while EXECUTIONS is persisted asynchronously exits 75 by design
    (engine-rs/src/connection.rs) and relies on being restarted."""

    def __init__(self, engines: Sequence[EngineProcess]) -> None:
        self.engines = list(engines)
        self.exits: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            for e in self.engines:
                if e.pid is not None and not e.running:
                    self.exits[f"{e.engine_id}:{e.wait(0)}"] += 1
                    await asyncio.to_thread(e.start)
            # Polling the processes' state (as a supervisor does), not a synchronisation.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.2)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 90)


async def test_nats_node_killed_during_a_takeover(
    cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    handle = cluster.handle
    load = Load(handle, new_account("PN"))
    async with three_engines(cluster, tmp_path) as (engines, watch):
        task = await under_load(load)
        victim, survivors = engines[0], engines[1:]
        moved = held_by(watch, victim)
        supervisor = Supervisor(survivors)
        node = cluster.stream_leader("KV_bridge_leases")
        killed_at = time.monotonic()
        victim.kill()
        cluster.kill(node)  # before the victim's leases expire: the takeover runs without it
        try:
            await watch.wait(all_owned_by(live_pids(survivors)), 4 * TAKEOVER_LIMIT_S, "takeover")
            takeover = time.monotonic() - killed_at
            after = watch.render()
            await finish(load, task)
        finally:
            await supervisor.stop()
        await asyncio.to_thread(cluster.nodes[node].start)
        result = await check(handle, load, "NATS node kill -9 during an engine takeover", takeover)
        result.result.notes["engine_exits"] = dict(supervisor.exits)
        codes_ok(survivors)
    assert moved, "the killed engine held no partition"
    print(f"node n{node} killed; engine exits restarted: {dict(supervisor.exits)}; after: {after}")


@pytest.mark.soak
async def test_soak_each_engine_killed_and_restarted_in_turn(
    cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    """The kill -9 fault six times over (each engine twice), each victim restarted once its
    partitions moved, under load throughout."""
    load = Load(cluster.handle, new_account("PSK"))
    async with three_engines(cluster, tmp_path) as (engines, watch):
        task = await under_load(load)
        longest = 0.0
        for e in [*engines, *engines]:
            killed_at = time.monotonic()
            e.kill()
            await watch.wait(all_owned_by(live_pids(engines)), TAKEOVER_LIMIT_S, "takeover")
            longest = max(longest, time.monotonic() - killed_at)
            await asyncio.to_thread(e.start)
            await watch.wait(share_is([3, 3, 2]), TAKEOVER_LIMIT_S, "back to 3/3/2")
            acked = len(load.acked)
            await load.until_acked(acked + 30, 120, "orders acked after the restart")
        await finish(load, task)
        await check(cluster.handle, load, "soak: kill -9 + restart of each engine, x2", longest)
        codes_ok(engines)
