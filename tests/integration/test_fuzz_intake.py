"""Hostile input against the real engine: thousands of mutated, random, oversized payloads and
headers on every subject it serves. The engine keeps serving (a valid order afterwards is
accepted), answers every request it can attribute (it has a reply subject) with a detailed
rejection, counts the rest, and its memory stays bounded.

The figures (per category: sent, answered, answers by reason; the engine's own counts) are
printed; run with ``-s`` to see them (the closing note of issue 12 quotes them).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from nats.aio.client import Client

from bridge import contract
from bridge.security.signing import Signer
from bridge.transport import service_error
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer
from tests.faults.harness import wait_for_ack_floor
from tests.integration.fuzz_payloads import Fuzz, huge, mutations, valid_order

pytestmark = pytest.mark.timeout(300)

ROUNDS = 140
"""Rounds of the small mutations: 140 x 16 payloads = 2,240 requests, plus as many queued."""
HUGE = 4
"""Oversized payloads of each kind (each up to ~1 MiB)."""
RSS_GROWTH_LIMIT = 96 * 1024 * 1024
"""The engine's resident memory may grow this much over the barrage, at most."""
IN_FLIGHT = 32

REQUESTS = (
    (contract.submit, orders_pb2.OrderAck),
    (contract.cancel, orders_pb2.OrderAck),
    (contract.status, orders_pb2.OrderStatusReply),
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def refusal_counts(log_file: Path) -> dict[str, int]:
    """The engine's ``intake refusals`` line (logged when it stops)."""
    for line in log_file.read_text(errors="replace").splitlines():
        if '"intake refusals"' in line:
            record = json.loads(line)
            return {k: int(v) for k, v in record.items() if isinstance(v, int)}
    raise AssertionError("the engine logged no `intake refusals` line")


class Tally:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.reasons: dict[str, Counter[str]] = defaultdict(Counter)


async def _request(
    nc: Client,
    sem: asyncio.Semaphore,
    tally: Tally,
    category: str,
    subject: str,
    answer_type: type[orders_pb2.OrderAck] | type[orders_pb2.OrderStatusReply],
    payload: bytes,
    headers: dict[str, str],
) -> None:
    async with sem:
        tally.sent[category] += 1
        reply = await nc.request(subject, payload, timeout=20, headers=headers or None)
        tally.answered[category] += 1
        error = service_error(reply.headers)
        if error is not None:  # undecodable: the service API's error answer, nothing else
            assert (error.code, reply.data) == (400, b""), (error, reply.data)
            tally.reasons[category]["SERVICE_ERROR_400"] += 1
            return
        answer = answer_type.FromString(reply.data)  # every other answer decodes as its type
        if isinstance(answer, orders_pb2.OrderAck):
            status = orders_pb2.AckStatus.Name(answer.status)
            if answer.status == orders_pb2.ACK_STATUS_REJECTED:
                assert answer.reason != orders_pb2.REJECT_REASON_UNSPECIFIED, answer
                assert answer.text or answer.field_errors, answer  # a detailed rejection
                status = orders_pb2.RejectReason.Name(answer.reason)
        else:
            status = orders_pb2.RejectReason.Name(answer.reason) if not answer.found else "FOUND"
            if not answer.found:
                assert answer.reason != orders_pb2.REJECT_REASON_UNSPECIFIED, answer
        tally.reasons[category][status] += 1


def _headers(
    signer: Signer, category: str, subject: str, payload: bytes, extra: dict[str, str]
) -> dict[str, str]:
    headers = dict(extra)
    if category == "unsigned":
        return headers
    signed = signer.headers(subject, payload)
    if category == "bad_signature":
        sig = signed[contract.HEADER_SIGNATURE]
        signed[contract.HEADER_SIGNATURE] = ("A" if sig[0] != "A" else "B") + sig[1:]
    return {**headers, **signed}


async def test_hostile_input_leaves_the_engine_serving(
    nats_server: ServerHandle, tmp_path: Path
) -> None:
    rng = random.Random(20261130)
    account = f"FZ-{uuid.uuid4().hex[:8]}"
    signer = dev_signer(nats_server.creds)
    engine = EngineProcess(nats_server, log_file=tmp_path / "engine.log").start()
    tally = Tally()
    queued = 0
    try:
        assert engine.pid is not None
        nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
        try:
            js = nc.jetstream()
            rss_before = rss_bytes(engine.pid)
            fuzz: list[Fuzz] = list(mutations(rng, account, ROUNDS))
            # Signature categories: well-formed orders, unsigned or with a corrupted signature.
            for _ in range(ROUNDS):
                data = valid_order(rng, account).SerializeToString()
                fuzz += [("unsigned", data, {}), ("bad_signature", data, {})]
            fuzz += list(huge(rng, account, HUGE))
            sem = asyncio.Semaphore(IN_FLIGHT)
            tasks = []
            for category, payload, extra in fuzz:
                subject_of, answer_type = REQUESTS[rng.randrange(len(REQUESTS))]
                subject = subject_of(account)
                headers = _headers(signer, category, subject, payload, extra)
                tasks.append(
                    _request(nc, sem, tally, category, subject, answer_type, payload, headers)
                )
            await asyncio.gather(*tasks)
            # The same payloads as queued orders: nobody to answer, so the engine counts them.
            for category, payload, extra in fuzz:
                subject = contract.queue(account)
                headers = _headers(signer, category, subject, payload, extra)
                if len(payload) + sum(len(k) + len(v) for k, v in headers.items()) > 60_000:
                    continue  # over the ORDERS stream's max_msg_size: refused by JetStream
                headers[contract.HEADER_MSG_ID] = f"fz-{uuid.uuid4().hex}"
                await js.publish(subject, payload, headers=headers, timeout=20)
                queued += 1
            await wait_for_ack_floor(nats_server, timeout=120)
            rss_after = rss_bytes(engine.pid)

            # Still serving: a valid, signed order is accepted.
            order = valid_order(rng, account)
            data = order.SerializeToString()
            subject = contract.submit(account)
            reply = await nc.request(
                subject, data, timeout=10, headers=signer.headers(subject, data)
            )
            ack = orders_pb2.OrderAck.FromString(reply.data)
            assert ack.status == orders_pb2.ACK_STATUS_ACCEPTED, ack
        finally:
            await nc.close()
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    counts = refusal_counts(engine.log_file)

    print("\nhostile input: category, sent, answered, answers by reason")
    for category in sorted(tally.sent):
        reasons = ", ".join(f"{r} {n}" for r, n in tally.reasons[category].most_common())
        print(f"  {category:18} {tally.sent[category]:5} {tally.answered[category]:5}  {reasons}")
    print(f"  queued (no reply): {queued}; engine counts: {counts}")
    print(f"  engine RSS: {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB")

    assert tally.answered == tally.sent  # every attributable request was answered
    assert sum(tally.sent.values()) >= 2000
    # Every unsigned / badly signed request and queued message was refused as such.
    assert counts["unsigned"] >= 2 * tally.sent["unsigned"]
    assert counts["bad_signature"] >= 2 * tally.sent["bad_signature"]
    assert tally.reasons["unsigned"] == Counter({"REJECT_REASON_UNSIGNED": tally.sent["unsigned"]})
    assert tally.reasons["bad_signature"] == Counter(
        {"REJECT_REASON_BAD_SIGNATURE": tally.sent["bad_signature"]}
    )
    # Hostile bytes were refused as malformed/oversize/wrong type, not executed.
    assert counts["malformed"] + counts["oversize"] + counts["wrong_type"] > 0
    assert rss_after - rss_before < RSS_GROWTH_LIMIT
