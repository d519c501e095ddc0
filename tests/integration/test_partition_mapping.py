"""nats-server's own ``partition()`` subject mapping puts every symbol of the shared vectors
(``schemas/testdata/partitions.json``) in the partition ``bridge.partition.partition_of`` gives
it, so a server mapping and the bridge can route by symbol alike.

A throwaway plain server (no TLS, no accounts, no JetStream: only the mapping matters) maps
``part.<symbol>`` to ``mapped.{{partition(PARTITIONS,1)}}.<symbol>``; the test publishes every
vector symbol that is one subject token and reads the partition token back. Symbols with a
``.`` (``BRK.B``, ...) are skipped: they span two tokens, so ``part.*`` does not match them (and
a multi-token ``partition()`` hashes the tokens without their separator, not the symbol).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nats
import pytest
from nats.aio.msg import Msg

from bridge import contract
from bridge.partition import partition_of
from bridge_dev.server import nats_server_binary

pytestmark = pytest.mark.integration

VECTORS = json.loads(
    (Path(__file__).parents[2] / "schemas" / "testdata" / "partitions.json").read_text("utf-8")
)
CASES: list[dict[str, Any]] = VECTORS["cases"]
ONE_TOKEN = [c for c in CASES if "." not in c["symbol"]]
SKIPPED = [c["symbol"] for c in CASES if "." in c["symbol"]]

_LISTENING = re.compile(r"Listening for client connections on (\S+:\d+)")
_READY_TIMEOUT_S = 10.0
_MESSAGES_TIMEOUT_S = 10.0


@dataclass
class _Started:
    address: str = ""
    ready: bool = False


def _follow(stream: IO[bytes], started: _Started, event: threading.Event) -> None:
    """Read the server's log to its end (so the pipe never fills): its client address, then
    "Server is ready" sets ``event``; so does the end of the log (the server exited)."""
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace")
            found = _LISTENING.search(line)
            if found:
                started.address = found.group(1)
            if "Server is ready" in line:
                started.ready = True
                event.set()
    event.set()


@pytest.fixture
def mapping_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server with the partition mapping; yields its URL, stops it afterwards."""
    conf = tmp_path / "mapping.conf"
    conf.write_text(
        'listen: "127.0.0.1:-1"\n'
        "mappings = {\n"
        f'  "part.*": "mapped.{{{{partition({contract.PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}"\n'
        "}\n",
        "utf-8",
    )
    proc = subprocess.Popen(
        [str(nats_server_binary()), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    started, event = _Started(), threading.Event()
    reader = threading.Thread(
        target=_follow, args=(proc.stderr, started, event), daemon=True, name="nats-server-log"
    )
    reader.start()
    try:
        event.wait(_READY_TIMEOUT_S)
        assert started.ready, f"nats-server not ready (exit code {proc.poll()}), config {conf}"
        assert started.address, "nats-server did not log its client address"
        yield f"nats://{started.address}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)


def test_the_vectors_leave_out_only_symbols_with_a_dot() -> None:
    """What the mapping test skips, and that it still reaches every partition."""
    assert SKIPPED == ["BRK.B", "BF.B", "a_b-c.d/e"]
    assert {c["partition"] for c in ONE_TOKEN} == set(range(contract.PARTITIONS))


async def test_nats_server_partition_mapping_equals_partition_of(mapping_server: str) -> None:
    nc = await nats.connect(mapping_server, allow_reconnect=False)
    try:
        got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            await got.put((msg.subject, msg.data.decode()))

        await nc.subscribe("mapped.>", cb=on_message)
        await nc.flush()  # the subscription is on the server before anything is published
        for case in ONE_TOKEN:
            await nc.publish(f"part.{case['symbol']}", case["symbol"].encode())
        await nc.flush()

        mapped: dict[str, int] = {}
        async with asyncio.timeout(_MESSAGES_TIMEOUT_S):
            while len(mapped) < len(ONE_TOKEN):
                subject, symbol = await got.get()
                head, partition, token = subject.split(".")
                assert (head, token) == ("mapped", symbol), subject
                assert symbol not in mapped, f"{symbol} delivered twice"
                mapped[symbol] = int(partition)
    finally:
        await nc.close()

    expected = {c["symbol"]: c["partition"] for c in ONE_TOKEN}
    assert mapped == expected, "nats-server's partition() differs from the vectors"
    assert {s: partition_of(s) for s in mapped} == mapped, "partition_of differs from the server"
