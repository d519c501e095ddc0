"""The tamper-evident execution journal (issue 12, item 5) against the real server and engine:
the engine's reports form a hash chain that ``bridge audit verify`` accepts after a clean run,
a restart and a crash at each failpoint; a deleted, altered or inserted report is found at its
stream sequence.

The verifier runs as the console command would (``python -m bridge.cli audit verify``) with the
operator's settings file and an entitlements file naming the dev engine key.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from nats.js.api import StorageType

from bridge import (
    BridgeClient,
    Order,
    OrderType,
    Side,
    TimeInForce,
    audit,
    contract,
)
from bridge.audit import StoredMessage
from bridge.security import entitlements
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineError, EngineProcess, client_settings, write_client_config
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from tests.faults.harness import new_account, order_flow, wait_for_finals

pytestmark = pytest.mark.integration

ENGINE_ID = "engine-1"  # EngineProcess's default
CHAIN_HEADERS = (
    contract.HEADER_CHAIN,
    contract.HEADER_CHAIN_PREV,
    contract.HEADER_CHAIN_DIGEST,
    contract.HEADER_CHAIN_SIGNATURE,
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass
class Verdict:
    code: int
    out: str


def _verify(handle: ServerHandle, tmp_path: Path, *args: str) -> Verdict:
    """``bridge audit verify`` as an operator would run it; its exit code and output."""
    ents = entitlements.parse(
        {
            "version": 1,
            "identities": {
                "engine": {
                    "role": "engine",
                    "nkey": handle.creds.role("engine").public_nkey,
                    "certificate_subject": "CN=engine",
                }
            },
        }
    )
    ents_file = tmp_path / "entitlements.toml"
    ents_file.write_text(ents.to_toml(), encoding="utf-8")
    config = write_client_config(client_settings(handle, role="operator"), tmp_path / "op.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bridge.cli", "audit", "verify"),
            *("--config", str(config), "--entitlements", str(ents_file), *args),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Verdict(done.returncode, done.stdout + done.stderr)


async def _trade(handle: ServerHandle, count: int, seed: int, *, queued: bool = False) -> None:
    """``count`` orders that each reach a final state (fills against the seeded book)."""
    account = new_account("AU")
    orders = order_flow(account, count, seed=seed)
    async with BridgeClient(client_settings(handle, request_timeout_ms=10_000)) as bridge:
        for order in orders:
            if queued:
                await bridge.enqueue(order)
            else:
                await bridge.submit(order)
    await wait_for_finals(handle, account, {o.client_order_id for o in orders}, 60)


async def _messages(handle: ServerHandle, stream: str) -> list[StoredMessage]:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        return [m async for m in audit.read_stream(js, stream, last, timeout=10)]
    finally:
        await nc.close()


def _ok(verdict: Verdict, reports: int | None = None) -> None:
    assert verdict.code == 0, verdict.out
    first = verdict.out.splitlines()[0]
    assert re.fullmatch(rf"OK: \d+ reports in 1 chains \(engine {ENGINE_ID}: seq 1\.\.\d+\)", first)
    if reports is not None:
        assert first.startswith(f"OK: {reports} reports"), first


def _broken_at(verdict: Verdict, seq: int, why: str) -> None:
    assert verdict.code == 1, verdict.out
    first = verdict.out.splitlines()[0]
    assert first.startswith(f"BROKEN at stream sequence {seq} "), first
    assert why in first, first


async def test_chain_verifies_after_a_clean_run_and_a_restart(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Every report carries its link; a restarted engine continues its chain where the stream
    says it ended, so the whole stream verifies as one chain."""
    handle = fresh_server.handle
    with EngineProcess(handle, log_file=tmp_path / "first.log") as first:
        await _trade(handle, 6, seed=1)
    assert "hash chain starts at genesis" in first.log_tail(400)
    _ok(await asyncio.to_thread(_verify, handle, tmp_path))
    with EngineProcess(handle, log_file=tmp_path / "second.log") as second:
        await _trade(handle, 6, seed=2, queued=True)
    assert "hash chain head found" in second.log_tail(400)
    messages = await _messages(handle, contract.EXECUTIONS_STREAM)
    assert all(m.headers.get(contract.HEADER_CHAIN) == ENGINE_ID for m in messages)
    assert all(contract.HEADER_CHAIN_SIGNATURE in m.headers for m in messages)
    _ok(await asyncio.to_thread(_verify, handle, tmp_path), reports=len(messages))


@pytest.mark.parametrize("failpoint", ["mid_publish", "after_ack", "after_store"])
async def test_chain_continues_across_a_crash(
    fresh_server: LocalNatsServer, tmp_path: Path, failpoint: str
) -> None:
    """The engine aborts at a failpoint (mid_publish: half of an execution's batch staged, none
    of it stored; after_ack: acked, not executed; after_store: a queued order's record stored,
    not executed); the restarted engine finds the head the crashed one committed last, recovery
    executes the order, and the chain verifies."""
    handle = fresh_server.handle
    account = new_account("CR")
    # A market order fills against the seeded book: an execution batch with fills.
    order = Order(
        client_order_id=f"crash-{uuid.uuid4().hex[:8]}",
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(10),
        time_in_force=TimeInForce.IOC,
    )
    crashing = EngineProcess(
        handle, log_file=tmp_path / "crash.log", env={"BRIDGE_FAILPOINT": failpoint}
    ).start()
    try:
        async with BridgeClient(client_settings(handle, request_timeout_ms=10_000)) as bridge:
            if failpoint == "after_store":
                await bridge.enqueue(order)
            else:
                ack = await bridge.submit(order)
                assert ack.accepted, ack
            assert await asyncio.to_thread(crashing.wait, 30) == -signal.SIGABRT
    finally:
        crashing.kill()
    assert "failpoint reached" in crashing.log_tail(5)
    with EngineProcess(handle, log_file=tmp_path / "restart.log") as restarted:
        reports = await wait_for_finals(handle, account, {order.client_order_id}, 60)
        await _trade(handle, 4, seed=4)
    assert "hash chain head found" in restarted.log_tail(400)
    assert any(r.exec_type == orders_pb2.EXEC_TYPE_TRADE for r in reports)
    _ok(await asyncio.to_thread(_verify, handle, tmp_path))


async def test_deleted_report_is_found_at_the_next_report_of_its_chain(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Deleting the stream's last report leaves only a gap (reported at its sequence); deleting
    one in the middle breaks the next report's prev (reported there)."""
    handle = fresh_server.handle
    with EngineProcess(handle, log_file=tmp_path / "engine.log"):
        await _trade(handle, 6, seed=5)
    seqs = [m.seq for m in await _messages(handle, contract.EXECUTIONS_STREAM)]
    middle, last = seqs[len(seqs) // 2], seqs[-1]
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        assert await js.delete_msg(contract.EXECUTIONS_STREAM, last)
        _broken_at(await asyncio.to_thread(_verify, handle, tmp_path), last, "message missing")
        assert await js.delete_msg(contract.EXECUTIONS_STREAM, middle)
    finally:
        await nc.close()
    verdict = await asyncio.to_thread(_verify, handle, tmp_path)
    _broken_at(verdict, middle + 1, f"(chain {ENGINE_ID}): prev mismatch")


async def _copy(
    handle: ServerHandle, messages: list[StoredMessage]
) -> tuple[str, list[StoredMessage]]:
    """A new stream holding ``messages`` in order (sequences 1..n) with their chain headers.

    The operator role may create streams and publish to its own inbox namespace, so the copy
    captures a subject under ``_INBOX.operator`` that no request uses."""
    name = f"AUDIT_COPY_{uuid.uuid4().hex[:8].upper()}"
    subject = f"{contract.inbox_prefix('operator')}.{name.lower()}"
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        await js.add_stream(name=name, subjects=[subject], storage=StorageType.MEMORY)
        for m in messages:
            headers = {k: v for k, v in m.headers.items() if k in CHAIN_HEADERS}
            await js.publish(subject, m.payload, headers=headers)
    finally:
        await nc.close()
    return name, await _messages(handle, name)


async def test_altered_and_inserted_reports_are_found_where_they_are(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Copies of EXECUTIONS: an unchanged copy verifies; with one report's fill quantity altered
    the verifier names that report; with a forged report inserted (linked correctly to the one
    before it, signed by a key that is not the engine's) it names the forged one."""
    handle = fresh_server.handle
    with EngineProcess(handle, log_file=tmp_path / "engine.log"):
        await _trade(handle, 6, seed=6)
    original = await _messages(handle, contract.EXECUTIONS_STREAM)
    copy, _ = await _copy(handle, original)
    _ok(await asyncio.to_thread(_verify, handle, tmp_path, "--stream", copy), len(original))

    target = next(
        i
        for i, m in enumerate(original)
        if orders_pb2.ExecutionReport.FromString(m.payload).exec_type == orders_pb2.EXEC_TYPE_TRADE
    )
    report = orders_pb2.ExecutionReport.FromString(original[target].payload)
    report.last_qty.units += 1_000
    altered = list(original)
    altered[target] = StoredMessage(0, original[target].headers, report.SerializeToString())
    copy, stored = await _copy(handle, altered)
    verdict = await asyncio.to_thread(_verify, handle, tmp_path, "--stream", copy)
    _broken_at(verdict, stored[target].seq, "digest mismatch")

    at = len(original) // 2
    before = original[at - 1]
    forger = SigningKey.generate()
    prev = bytes.fromhex(before.headers[contract.HEADER_CHAIN_DIGEST])
    payload = before.payload + b"\x00"
    digest = audit.link(prev, payload)
    forged = StoredMessage(
        0,
        {
            contract.HEADER_CHAIN: ENGINE_ID,
            contract.HEADER_CHAIN_PREV: prev.hex(),
            contract.HEADER_CHAIN_DIGEST: digest.hex(),
            contract.HEADER_CHAIN_SIGNATURE: _b64(forger.sign(digest).signature),
        },
        payload,
    )
    copy, stored = await _copy(handle, [*original[:at], forged, *original[at:]])
    verdict = await asyncio.to_thread(_verify, handle, tmp_path, "--stream", copy)
    _broken_at(verdict, stored[at].seq, "bad signature")


async def test_engine_refuses_to_start_on_a_tampered_head(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A report in this engine's name whose digest does not hold (written with the engine's
    credentials, not its chain) is where the restarted engine would continue: it refuses to
    start, naming the sequence."""
    handle = fresh_server.handle
    with EngineProcess(handle, log_file=tmp_path / "first.log"):
        await _trade(handle, 2, seed=7)
    nc = await connect_as(handle.url, handle.creds, "engine")
    try:
        ack = await nc.jetstream().publish(
            contract.executions("FORGED", "f1"),
            b"a report nobody executed",
            headers={
                contract.HEADER_CHAIN: ENGINE_ID,
                contract.HEADER_CHAIN_PREV: "0" * 64,
                contract.HEADER_CHAIN_DIGEST: "ab" * 32,
            },
        )
    finally:
        await nc.close()
    refused = EngineProcess(handle, log_file=tmp_path / "refused.log")
    with pytest.raises(EngineError, match="exited before it was ready"):
        await asyncio.to_thread(refused.start)
    log = refused.log_file.read_text()
    assert re.search(rf"tampered with: EXECUTIONS sequence {ack.seq}\b", log), log[-3000:]
    verdict = await asyncio.to_thread(_verify, handle, tmp_path)
    _broken_at(verdict, ack.seq, "prev mismatch")


async def test_two_engines_chains_and_the_search_bound(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Another engine id's reports after this engine's last one: a search bound below them
    refuses the start (naming the bound); the default finds the head past them; the stream
    verifies as two chains."""
    handle = fresh_server.handle
    with EngineProcess(handle, log_file=tmp_path / "e1.log"):
        await _trade(handle, 2, seed=8)
    with EngineProcess(handle, engine_id="engine-2", log_file=tmp_path / "e2.log"):
        await _trade(handle, 4, seed=9)
    bounded = EngineProcess(
        handle, log_file=tmp_path / "bounded.log", env={"BRIDGE_CHAIN_SEARCH_LIMIT": "5"}
    )
    with pytest.raises(EngineError, match="exited before it was ready"):
        await asyncio.to_thread(bounded.start)
    log = bounded.log_file.read_text()
    assert "not found in the last 5 sequences" in log, log[-3000:]
    with EngineProcess(handle, log_file=tmp_path / "e1-again.log") as again:
        await _trade(handle, 2, seed=10)
    assert "hash chain head found" in again.log_tail(400)
    verdict = await asyncio.to_thread(_verify, handle, tmp_path)
    assert verdict.code == 0, verdict.out
    assert re.match(
        r"OK: \d+ reports in 2 chains \(engine engine-1: seq 1\.\.\d+, engine engine-2: seq ",
        verdict.out,
    ), verdict.out
