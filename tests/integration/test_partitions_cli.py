"""``bridge partitions`` against a real nats-server and two real partitioned engines: it shows
each partition's owner as the leases say and, as its epoch, the revision at which that owner
created the lease (seen here by a watch on the bucket from before the engines start), also after
a kill -9 moved the dead engine's partitions; and every partition free once the survivor
stopped.

Nothing sleeps: the test follows the lease bucket and the partitions' journals (the owner's
fence is the entry it writes first) and runs the command once both say the ownership settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from click.testing import CliRunner, Result
from nats.js.api import DeliverPolicy

from bridge import contract
from bridge.cli import cli
from bridge.cli._records import JournalEntry
from bridge_dev.engine import EngineProcess, client_settings, lease_ttl, write_client_config
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as

pytestmark = pytest.mark.integration

SYMBOLS = ("P-AAA", "P-BBB", "P-CCC")


def engine(handle: ServerHandle, tmp_path: Path, engine_id: str) -> EngineProcess:
    config = tmp_path / "partitioned.toml"
    lines = [f'[symbols."{s}"]\nmax_order_qty = "5000"\nreference_price = "50"' for s in SYMBOLS]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return EngineProcess(
        handle,
        engine_id=engine_id,
        config_file=config,
        log_file=tmp_path / f"{engine_id}.log",
        env={"BRIDGE_PARTITIONED": "true"},
    )


@dataclass
class Seen:
    """What the bucket and the journals said so far."""

    owners: dict[int, str] = field(default_factory=dict)
    created: dict[int, int] = field(default_factory=dict)
    """Partition -> the revision its current lease was created at (a PUT on an absent key)."""
    members: set[str] = field(default_factory=set)
    epochs: dict[int, int] = field(default_factory=dict)
    """Partition -> the epoch of its journal's last entry."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def settled(self, want: dict[str, int]) -> bool:
        """Each engine of ``want`` holds that many partitions, nobody else holds one, the live
        engines are those of ``want``, and each owner has fenced its partition's journal."""
        counts = {e: sum(1 for o in self.owners.values() if o == e) for e in want}
        return (
            counts == want
            and len(self.owners) == sum(want.values())
            and self.members == set(want)
            and all(self.epochs.get(p) == self.created.get(p) for p in self.owners)
        )


@contextlib.asynccontextmanager
async def following(handle: ServerHandle) -> AsyncIterator[Seen]:
    """Follows the lease bucket and the partitions' journals into a :class:`Seen`."""
    seen = Seen()
    nc = await connect_as(handle.url, handle.creds, "operator")
    js = nc.jetstream()
    kv = await js.key_value(contract.LEASES_KV_BUCKET)
    watcher = await kv.watch(">")
    journal = await js.subscribe(
        contract.JOURNAL_ALL, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    partition_prefix = contract.LEASE_PARTITION_KEY_PREFIX
    member_prefix = contract.LEASE_MEMBER_KEY_PREFIX

    async def leases() -> None:
        values: dict[int, bytes] = {}
        while True:
            try:
                e = await watcher.updates(timeout=3600)  # type: ignore[no-untyped-call]
            except nats.errors.TimeoutError:
                continue
            if e is None:
                continue  # the initial values are all in
            live = e.operation is None and bool(e.value)
            if e.key.startswith(member_prefix):
                name = e.key.removeprefix(member_prefix)
                (seen.members.add if live else seen.members.discard)(name)
            elif e.key.startswith(partition_prefix):
                p = int(e.key.removeprefix(partition_prefix))
                if not live or e.value is None:
                    seen.owners.pop(p, None)
                    seen.created.pop(p, None)
                    values.pop(p, None)
                else:
                    seen.owners[p] = json.loads(e.value)["engine_id"]
                    # a renewal rewrites the holder's value as it is; another value is a new
                    # holder (also when the key's expiry was not seen)
                    if values.get(p) != e.value:
                        seen.created[p] = e.revision
                    values[p] = e.value
            seen.changed.set()

    async def journals() -> None:
        while True:
            m = await journal.next_msg(timeout=3600)
            engine_id = m.subject.removeprefix(contract.JOURNAL_PREFIX)
            if engine_id.startswith("p") and engine_id[1:].isdigit():  # a partition's
                seen.epochs[int(engine_id[1:])] = JournalEntry.FromString(m.data).epoch
            seen.changed.set()

    tasks = [asyncio.create_task(leases()), asyncio.create_task(journals())]
    try:
        yield seen
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await watcher.stop()  # type: ignore[no-untyped-call]  # unannotated in nats-py
        await nc.close()


async def until(seen: Seen, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        left = deadline - time.monotonic()
        assert left > 0, f"{what} never happened: {seen}"
        seen.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.changed.wait(), left)


async def bridge_partitions(config: Path, *args: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["partitions", *args, "--config", str(config)],
        catch_exceptions=False,
    )


def check(doc: dict[str, Any], seen: Seen, members: list[str]) -> None:
    rows = doc["partitions"]
    assert [r["partition"] for r in rows] == list(range(contract.PARTITIONS))
    assert [r["engine_id"] for r in rows] == [f"p{p}" for p in range(contract.PARTITIONS)]
    assert {r["partition"]: r["owner"] for r in rows} == seen.owners
    for r in rows:
        # the epoch is the revision at which the owner created its lease; renewals have moved
        # the lease's revision on since (or not yet)
        assert r["epoch"] == seen.created[r["partition"]], r
        assert r["lease_revision"] >= r["epoch"], r
    assert [m["engine_id"] for m in doc["members"]] == members
    assert doc["no_owner"] == []


async def test_bridge_partitions_shows_owner_and_epoch_before_and_after_a_kill(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    operator = write_client_config(
        client_settings(handle, role="operator"), tmp_path / "operator.toml"
    )
    limit = 6 * lease_ttl()
    async with following(handle) as seen:
        a = engine(handle, tmp_path, "engine-A").start()
        b = engine(handle, tmp_path, "engine-B").start()
        try:
            want = {"engine-A": 4, "engine-B": 4}
            await until(seen, lambda: seen.settled(want), limit, f"ownership {want}")
            result = await bridge_partitions(operator, "--json")
            assert result.exit_code == 0, result.output
            before = json.loads(result.output)
            check(before, seen, ["engine-A", "engine-B"])
            table = await bridge_partitions(operator)
            assert table.exit_code == 0, table.output
            print(table.output)
            a_held = {p for p, o in seen.owners.items() if o == "engine-A"}

            a.kill()
            want = {"engine-B": 8}
            await until(seen, lambda: seen.settled(want), limit, f"ownership {want}")
            result = await bridge_partitions(operator, "--json")
            assert result.exit_code == 0, result.output
            after = json.loads(result.output)
            check(after, seen, ["engine-B"])
            for p in a_held:  # moved: a newer epoch than the dead engine's
                assert after["partitions"][p]["epoch"] > before["partitions"][p]["epoch"]
            table = await bridge_partitions(operator)
            print(table.output)
        finally:
            a.kill()
            code = b.stop()
        assert code == 0, b.log_tail()
    # stopped cleanly: every lease and its presence given back; the journals keep the epochs
    result = await bridge_partitions(operator, "--json")
    assert result.exit_code == 0, result.output
    gone = json.loads(result.output)
    assert [r["owner"] for r in gone["partitions"]] == [None] * contract.PARTITIONS
    assert gone["members"] == []
    assert [r["epoch"] for r in gone["partitions"]] == [r["epoch"] for r in after["partitions"]]
