"""The sentinel and the engine's refusals (bad signature, replay): the signer is kicked, alerted.

One server, one sentinel and one local webhook receiver for the module
(tests/integration/sentinel_harness.py). The refusals are raised by the real engine: desk-a
sends a forged signature, or replays a signed operation, and the sentinel must kick desk-a's
connection and alert with the refusal's id. The sentinel's side of it is also checked alone,
with the engine's ``SecurityAlert`` published on ALERTS as the engine identity (no engine
running). Last, the sentinel's log is checked for secrets.
"""

from __future__ import annotations

import uuid

import pytest

from bridge import contract
from bridge.v1 import orders_pb2
from bridge.v1 import security_pb2 as pb
from bridge_dev.engine import EngineProcess
from bridge_dev.sentinel import SentinelProcess
from bridge_dev.server import ServerHandle
from tests.integration.sentinel_harness import (
    AlertWatch,
    Webhook,
    engine_refusal,
    nats_server_fixture,  # noqa: F401
    new_order,
    real_refusal,
    sentinel_fixture,  # noqa: F401
    watch_fixture,  # noqa: F401
    webhook_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- injected alerts


async def test_bad_signature_refusal_kicks_the_signer(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    await engine_refusal(
        nats_server,
        sentinel,
        watch,
        webhook,
        pb.SECURITY_VIOLATION_KIND_BAD_SIGNATURE,
        "bad signature",
    )


async def test_replay_refusal_kicks_the_signer(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    await engine_refusal(
        nats_server, sentinel, watch, webhook, pb.SECURITY_VIOLATION_KIND_REPLAYED, "replay"
    )


# --------------------------------------------------------------------------- the real engine


async def test_bad_signature_real_engine(
    nats_server: ServerHandle,
    engine: EngineProcess,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
) -> None:
    order_id = f"badsig-{uuid.uuid4().hex[:8]}"

    def tamper(headers: dict[str, str]) -> dict[str, str]:
        signature = headers[contract.HEADER_SIGNATURE]
        flipped = "A" if signature[0] != "A" else "B"
        return {**headers, contract.HEADER_SIGNATURE: flipped + signature[1:]}

    await real_refusal(
        nats_server,
        sentinel,
        watch,
        webhook,
        label="bad signature",
        kind=pb.SECURITY_VIOLATION_KIND_BAD_SIGNATURE,
        reason=orders_pb2.REJECT_REASON_BAD_SIGNATURE,
        subject=contract.submit("DESK-A"),
        payload=new_order("DESK-A", order_id),
        order_id=order_id,
        forge=tamper,
        replay=False,
    )


async def test_replay_real_engine(
    nats_server: ServerHandle,
    engine: EngineProcess,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
) -> None:
    """A signed cancel of an order that does not exist (nothing to execute), sent twice."""
    order_id = f"replay-{uuid.uuid4().hex[:8]}"
    cancel = orders_pb2.CancelRequest(account="DESK-A", client_order_id=order_id)
    await real_refusal(
        nats_server,
        sentinel,
        watch,
        webhook,
        label="replay",
        kind=pb.SECURITY_VIOLATION_KIND_REPLAYED,
        reason=orders_pb2.REJECT_REASON_REPLAYED,
        subject=contract.cancel("DESK-A"),
        payload=cancel.SerializeToString(),
        order_id=order_id,
        forge=lambda headers: headers,
        replay=True,
    )


# --------------------------------------------------------------------------- hygiene


async def test_sentinel_logs_no_secret(
    nats_server: ServerHandle, sentinel: SentinelProcess
) -> None:
    """Its log holds public keys at most: no seed of any identity, no private key."""
    text = sentinel.log_file.read_text("utf-8")
    creds = nats_server.creds
    for name in ("sentinel", "sentinel-system", "orchestrator", "desk-a", "desk-b"):
        identity = creds.identity(name)
        seed = identity.seed_file.read_text("ascii").strip()
        assert seed not in text, f"{name}'s seed is in the sentinel's log"
        assert "PRIVATE KEY" not in text
