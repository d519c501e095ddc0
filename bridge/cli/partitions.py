"""``bridge partitions``: who owns each symbol partition (``partitioned = true``; README,
*Symbol-partitioned engines*; runbooks/partitions.md). Operator identity, read only.

One row per partition ``0 .. PARTITIONS - 1``:

* ``engine_id``: the partition's engine id (``p3``): its journal and records, whoever holds it;
* ``owner``, ``host``, ``pid``: the holder named by the lease ``partition.<n>`` of the bucket
  ``bridge_leases``, or ``free`` when nobody holds it (no engine, or a takeover in progress);
* ``epoch``: the **fencing epoch**, read from the last entry of the partition's journal
  (``bridge.v1.journal.p<n>`` in stream JOURNAL, ``JournalEntry.epoch``): the revision at which
  the writer of that entry took the lease. A new owner's first entry is its fence, so once it
  has recovered this is its epoch; until then (a few hundred ms of a takeover) it is still the
  previous owner's. ``-``: the journal is empty (the partition never had an owner);
* ``lease_rev``: the lease's current revision in the bucket. Not the epoch: every renewal
  (each TTL/3) bumps it, and the bucket keeps one revision per key, so the revision the holder
  created the key at is gone; it only moves forward while the holder lives;
* ``journal_seq``: the JOURNAL stream sequence of that last entry.

Then the live engines (``member.<engine_id>`` keys): id, host, pid. ``--json`` prints the same
as one JSON document. Exit 1 when engines are live but a partition has no owner (stuck, or
moving right now: run it again), 0 otherwise (no engine live: every partition free, as in an
unpartitioned deployment).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from nats.js.errors import NotFoundError

from bridge import contract
from bridge.cli._common import (
    CommandFailed,
    Negative,
    async_command,
    connect,
    connection_options,
    settings,
)
from bridge.cli._records import JournalEntry
from bridge.partition import partition_id

_WATCH_TIMEOUT_S = 10.0
FREE = "free"


@dataclass(frozen=True)
class Holder:
    """A lease's value (engine-rs/src/lease/policy.rs ``Holder``) and the key's revision."""

    engine_id: str
    host: str
    pid: int
    instance: str
    revision: int

    @staticmethod
    def decode(value: bytes, revision: int) -> Holder | None:
        """None for a value that is not a holder (written by something else)."""
        try:
            doc = json.loads(value)
            return Holder(
                engine_id=str(doc["engine_id"]),
                host=str(doc.get("host", "")),
                pid=int(doc.get("pid", 0)),
                instance=str(doc.get("instance", "")),
                revision=revision,
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class LastEntry:
    """The last entry of a partition's journal: its stream sequence and writer's epoch."""

    seq: int
    epoch: int
    written_at_unix_ns: int


@dataclass(frozen=True)
class Partition:
    """One row: a partition, its engine id, its holder (None: free) and its journal's last
    entry (None: empty)."""

    partition: int
    engine_id: str
    owner: Holder | None
    last_entry: LastEntry | None

    @property
    def epoch(self) -> int | None:
        return self.last_entry.epoch if self.last_entry is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "engine_id": self.engine_id,
            "owner": self.owner.engine_id if self.owner else None,
            "host": self.owner.host if self.owner else None,
            "pid": self.owner.pid if self.owner else None,
            "instance": self.owner.instance if self.owner else None,
            "epoch": self.epoch,
            "lease_revision": self.owner.revision if self.owner else None,
            "journal_seq": self.last_entry.seq if self.last_entry else None,
        }


@dataclass(frozen=True)
class Ownership:
    partitions: list[Partition]
    members: list[Holder]

    @property
    def stuck(self) -> list[int]:
        """Partitions without an owner while engines are live."""
        if not self.members:
            return []
        return [p.partition for p in self.partitions if p.owner is None]


def ownership(
    leases: dict[str, tuple[bytes, int]], last_entries: dict[int, LastEntry | None]
) -> Ownership:
    """The rows, from the bucket's live keys (key -> (value, revision)) and each partition's
    last journal entry."""
    owners: dict[int, Holder] = {}
    members: list[Holder] = []
    for key, (value, revision) in leases.items():
        holder = Holder.decode(value, revision)
        if holder is None:
            continue
        if key.startswith(contract.LEASE_MEMBER_KEY_PREFIX):
            members.append(holder)
        elif key.startswith(contract.LEASE_PARTITION_KEY_PREFIX):
            number = key.removeprefix(contract.LEASE_PARTITION_KEY_PREFIX)
            if number.isdigit():
                owners[int(number)] = holder
    rows = [
        Partition(p, partition_id(p), owners.get(p), last_entries.get(p))
        for p in range(contract.PARTITIONS)
    ]
    return Ownership(rows, sorted(members, key=lambda m: m.engine_id))


def last_entry(seq: int, payload: bytes) -> LastEntry:
    entry = JournalEntry.FromString(payload)
    return LastEntry(seq, int(entry.epoch), int(entry.written_at_unix_ns))


async def read(nc: Any) -> Ownership:
    """The lease bucket's live keys and the last entry of every partition's journal."""
    js = nc.jetstream()
    try:
        kv = await js.key_value(contract.LEASES_KV_BUCKET)
    except NotFoundError as exc:
        bucket = contract.LEASES_KV_BUCKET
        raise CommandFailed(f"bucket {bucket} is not provisioned (bridge provision)") from exc
    leases: dict[str, tuple[bytes, int]] = {}
    watcher = await kv.watch(">")
    try:
        while (entry := await watcher.updates(timeout=_WATCH_TIMEOUT_S)) is not None:
            if entry.operation is None and entry.value:
                leases[entry.key] = (entry.value, entry.revision or 0)
            else:  # deleted, purged or expired since
                leases.pop(entry.key, None)
    finally:
        await watcher.stop()
    entries: dict[int, LastEntry | None] = {}
    for p in range(contract.PARTITIONS):
        try:
            msg = await js.get_last_msg(contract.JOURNAL_STREAM, contract.journal(partition_id(p)))
        except NotFoundError:
            entries[p] = None
            continue
        entries[p] = last_entry(msg.seq, msg.data or b"")
    return ownership(leases, entries)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def render(o: Ownership) -> list[str]:
    """The table, the members and, when engines are live, which partitions have no owner."""
    rows: list[tuple[str, ...]] = [
        ("partition", "engine_id", "owner", "host", "pid", "epoch", "lease_rev", "journal_seq")
    ]
    for p in o.partitions:
        h = p.owner
        rows.append(
            (
                str(p.partition),
                p.engine_id,
                h.engine_id if h else FREE,
                h.host if h else "-",
                str(h.pid) if h else "-",
                _dash(p.epoch),
                str(h.revision) if h else "-",
                _dash(p.last_entry.seq if p.last_entry else None),
            )
        )
    lines = _table(rows)
    lines.append("")
    if o.members:
        held = {m.engine_id: 0 for m in o.members}
        for p in o.partitions:
            if p.owner is not None:
                held[p.owner.engine_id] = held.get(p.owner.engine_id, 0) + 1
        members: list[tuple[str, ...]] = [("member", "host", "pid", "partitions")]
        members += [(m.engine_id, m.host, str(m.pid), str(held[m.engine_id])) for m in o.members]
        lines += _table(members)
    else:
        lines.append("no live partitioned engine (no member.* key in bridge_leases)")
    if o.stuck:
        lines.append(f"no owner: partition(s) {', '.join(map(str, o.stuck))}")
    return lines


def as_json(o: Ownership) -> dict[str, Any]:
    return {
        "partitions": [p.as_json() for p in o.partitions],
        "members": [asdict(m) for m in o.members],
        "no_owner": o.stuck,
    }


@click.command()
@click.option("--json", "as_json_output", is_flag=True, help="One JSON document instead.")
@connection_options
@async_command("reading the partition leases")
async def partitions(as_json_output: bool, config: Path | None, nats_url: str | None) -> None:
    """Who owns each symbol partition: its engine id (p<n>), the owning engine (or free), the
    fencing epoch (of the last entry of the partition's journal), the lease's current revision;
    then the live engines. Exit 1 when engines are live but a partition has no owner."""
    nc = await connect(settings(config, nats_url))
    try:
        found = await read(nc)
    finally:
        await nc.close()
    if as_json_output:
        click.echo(json.dumps(as_json(found), indent=2))
    else:
        for line in render(found):
            click.echo(line)
    if found.stuck:
        raise Negative()
