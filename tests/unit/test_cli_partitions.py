"""``bridge partitions`` against a fake NATS: the lease bucket's keys and the partitions' last
journal entries become one row per partition (owner or free, the journal's epoch, the lease's
revision), the live engines, the JSON document and the exit code."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import CliRunner
from nats.js.errors import NotFoundError

from bridge import contract
from bridge.cli import cli
from bridge.cli._records import JournalEntry

# the module, not the command of the same name that bridge.cli exports
module = importlib.import_module("bridge.cli.partitions")


def holder(engine_id: str, pid: int) -> bytes:
    """A lease value as the engine writes it (engine-rs/src/lease/policy.rs Holder)."""
    return json.dumps(
        {
            "engine_id": engine_id,
            "instance": f"{pid:016x}",
            "host": "trade-7",
            "pid": pid,
            "taken_unix_ms": 1764460071972,
        }
    ).encode()


@dataclass
class Entry:
    key: str
    value: bytes | None
    revision: int
    operation: str | None = None


@dataclass
class Msg:
    seq: int
    data: bytes


class Watcher:
    def __init__(self, entries: list[Entry]) -> None:
        self._left: list[Entry | None] = [*entries, None]
        self.stopped = False

    async def updates(self, timeout: float) -> Entry | None:
        return self._left.pop(0)

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeNats:
    entries: list[Entry]
    journal: dict[str, Msg] = field(default_factory=dict)
    bucket: bool = True
    watchers: list[Watcher] = field(default_factory=list)
    closed: bool = False

    def jetstream(self) -> FakeNats:
        return self

    async def key_value(self, bucket: str) -> FakeNats:
        assert bucket == contract.LEASES_KV_BUCKET
        if not self.bucket:
            raise NotFoundError
        return self

    async def watch(self, keys: str) -> Watcher:
        assert keys == ">"
        self.watchers.append(Watcher(self.entries))
        return self.watchers[-1]

    async def get_last_msg(self, stream: str, subject: str) -> Msg:
        assert stream == contract.JOURNAL_STREAM
        if subject not in self.journal:
            raise NotFoundError
        return self.journal[subject]

    async def close(self) -> None:
        self.closed = True


def entry(epoch: int, seq: int) -> Msg:
    return Msg(seq, JournalEntry(engine_id="p0", epoch=epoch).SerializeToString())


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNats:
    nc = FakeNats(
        entries=[
            Entry("member.engine-A", holder("engine-A", 11), 40),
            Entry("member.engine-B", holder("engine-B", 22), 41),
            Entry("partition.0", holder("engine-A", 11), 42),
            Entry("partition.1", holder("engine-B", 22), 43),
            Entry("partition.2", holder("engine-A", 11), 30),
            Entry("partition.2", None, 44, operation="PURGE"),  # expired since
            Entry("partition.3", b"not a holder", 45),
            Entry("intake", holder("engine-1", 5), 3),  # an unpartitioned engine's: not shown
        ],
        journal={
            contract.journal("p0"): entry(epoch=7, seq=100),
            contract.journal("p1"): entry(epoch=9, seq=101),
            contract.journal("p2"): entry(epoch=8, seq=90),
        },
    )

    async def connect(*_: Any, **__: Any) -> FakeNats:
        return nc

    monkeypatch.setattr(module, "connect", connect)
    return nc


def test_one_row_per_partition_with_owner_epoch_and_members(fake: FakeNats) -> None:
    result = CliRunner().invoke(cli, ["partitions"])
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "partition",
        "engine_id",
        "owner",
        "host",
        "pid",
        "epoch",
        "lease_rev",
        "journal_seq",
    ]
    rows = {int(line.split()[0]): line.split() for line in lines[1 : 1 + contract.PARTITIONS]}
    assert sorted(rows) == list(range(contract.PARTITIONS))
    assert rows[0] == ["0", "p0", "engine-A", "trade-7", "11", "7", "42", "100"]
    assert rows[1] == ["1", "p1", "engine-B", "trade-7", "22", "9", "43", "101"]
    # expired lease: free, and the journal still says whose epoch wrote last
    assert rows[2] == ["2", "p2", "free", "-", "-", "8", "-", "90"]
    assert rows[3][:3] == ["3", "p3", "free"]  # a value that is not a holder
    assert rows[7] == ["7", "p7", "free", "-", "-", "-", "-", "-"]
    assert "engine-A  trade-7  11   1" in result.output
    assert "engine-B  trade-7  22   1" in result.output
    assert "no owner: partition(s) 2, 3, 4, 5, 6, 7" in result.output
    assert result.exit_code == 1  # engines live, partitions without owner
    assert fake.closed
    assert all(w.stopped for w in fake.watchers)


def test_json(fake: FakeNats) -> None:
    result = CliRunner().invoke(cli, ["partitions", "--json"])
    doc = json.loads(result.output)
    assert doc["partitions"][0] == {
        "partition": 0,
        "engine_id": "p0",
        "owner": "engine-A",
        "host": "trade-7",
        "pid": 11,
        "instance": f"{11:016x}",
        "epoch": 7,
        "lease_revision": 42,
        "journal_seq": 100,
    }
    assert doc["partitions"][2]["owner"] is None
    assert doc["partitions"][2]["epoch"] == 8
    assert [m["engine_id"] for m in doc["members"]] == ["engine-A", "engine-B"]
    assert doc["no_owner"] == [2, 3, 4, 5, 6, 7]
    assert result.exit_code == 1


def test_every_partition_owned_exits_0(fake: FakeNats) -> None:
    fake.entries = [e for e in fake.entries if e.key.startswith("member.")] + [
        Entry(f"partition.{p}", holder("engine-A" if p % 2 else "engine-B", 1), 50 + p)
        for p in range(contract.PARTITIONS)
    ]
    result = CliRunner().invoke(cli, ["partitions"])
    assert result.exit_code == 0, result.output
    assert "no owner" not in result.output


def test_no_partitioned_engine_is_not_a_failure(fake: FakeNats) -> None:
    """An unpartitioned deployment: every partition free, nobody is missing."""
    fake.entries = [Entry("intake", holder("engine-1", 5), 3)]
    result = CliRunner().invoke(cli, ["partitions"])
    assert result.exit_code == 0, result.output
    assert "no live partitioned engine" in result.output
    assert result.output.count(" free ") == contract.PARTITIONS


def test_an_unprovisioned_bucket_exits_2(fake: FakeNats) -> None:
    fake.bucket = False
    result = CliRunner().invoke(cli, ["partitions"])
    assert result.exit_code == 2
    assert "bridge_leases is not provisioned" in result.output
