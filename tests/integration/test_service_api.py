"""The engine as NATS micro service ``bridge-engine``, seen through the pinned natscli
(``.dev/bin/nats``, built by ``./dev setup``) with the operator's credentials: ``nats micro ls``,
``info``, ``stats`` and ``ping`` list the running engine with its endpoints, and the
per-endpoint request and error counts move with the requests it serves.

One engine runs at a time (the intake lease refuses a second live engine), so the instances
are shown one after the other: a cleanly stopped engine leaves the service at once and the next
one registers a new instance.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge import contract
from bridge.transport import service_error
from bridge.v1 import orders_pb2
from bridge_dev import natscli
from bridge_dev.engine import EngineProcess
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from bridge_dev.signing import dev_signer, signed
from tests.integration.fuzz_payloads import valid_order

NATS_CLI = natscli.NATS_CLI
ENDPOINTS = {
    "submit": contract.SUBMIT_ALL,
    "cancel": contract.CANCEL_ALL,
    "status": contract.STATUS_ALL,
}

pytestmark = pytest.mark.skipif(
    not NATS_CLI.exists(), reason="natscli missing: run ./dev setup (builds .dev/bin/nats)"
)


def nats_cli(handle: ServerHandle, home: Path, *args: str) -> str:
    """Runs natscli as the operator (mTLS + NKey flags, no saved context); its stdout."""
    command = natscli.command(handle, "operator", *args)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def micro_json(handle: ServerHandle, home: Path, *args: str) -> Any:
    return json.loads(nats_cli(handle, home, "micro", *args, "--json"))


def endpoint_stats(stats: list[dict[str, Any]], instance: str) -> dict[str, dict[str, Any]]:
    (mine,) = [s for s in stats if s["id"] == instance]
    return {e["name"]: e for e in mine["endpoints"]}


async def serve_some_requests(handle: ServerHandle) -> None:
    """Through the engine's endpoints: two submits (one accepted, one rejected), one
    undecodable submit, a status query and a cancel of the accepted order."""
    account = "SVC-1"
    signer = dev_signer(handle.creds)
    nc = await connect_as(handle.url, handle.creds, "orchestrator")

    async def request(subject: str, payload: bytes) -> bytes:
        reply = await nc.request(
            subject, payload, timeout=10, headers=signed(signer, subject, payload)
        )
        error = service_error(reply.headers)
        assert error is None or error.code == 400, error
        return reply.data

    try:
        rests = valid_order(random.Random(13), account)
        ack = orders_pb2.OrderAck.FromString(
            await request(contract.submit(account), rests.SerializeToString())
        )
        assert ack.status == orders_pb2.ACK_STATUS_ACCEPTED, ack
        bad = orders_pb2.NewOrder()
        bad.CopyFrom(rests)
        bad.client_order_id += "-bad"
        bad.quantity.units = 0
        ack = orders_pb2.OrderAck.FromString(
            await request(contract.submit(account), bad.SerializeToString())
        )
        assert ack.status == orders_pb2.ACK_STATUS_REJECTED, ack  # a business answer
        assert await request(contract.submit(account), b"\xff\xff not protobuf") == b""
        query = orders_pb2.OrderStatusRequest(
            account=account, client_order_id=rests.client_order_id
        )
        state = orders_pb2.OrderStatusReply.FromString(
            await request(contract.status(account), query.SerializeToString())
        )
        assert state.found, state
        cancel = orders_pb2.CancelRequest(account=account, client_order_id=rests.client_order_id)
        ack = orders_pb2.OrderAck.FromString(
            await request(contract.cancel(account), cancel.SerializeToString())
        )
        assert ack.client_order_id == rests.client_order_id, ack  # canceled or too late

        # The orchestrator's one service API right: ping the engines (its readiness check).
        pong = await nc.request(contract.service_ping(contract.SERVICE_NAME), b"", timeout=5)
        assert json.loads(pong.data)["name"] == contract.SERVICE_NAME
    finally:
        await nc.close()


async def test_natscli_lists_the_engine_and_its_endpoint_statistics(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    home = tmp_path / "home"
    home.mkdir()
    first = EngineProcess(handle, engine_id="engine-A", log_file=tmp_path / "a.log").start()
    try:
        (listed,) = micro_json(handle, home, "ls")
        assert (listed["name"], listed["version"]) == (contract.SERVICE_NAME, "0.1.0")
        instance = listed["id"]

        info = micro_json(handle, home, "info", contract.SERVICE_NAME)["info"]
        assert info["id"] == instance
        assert info["metadata"] == {
            "engine_id": "engine-A",
            "contract_version": contract.CONTRACT_VERSION,
        }
        subjects = {e["name"]: (e["subject"], e["queue_group"]) for e in info["endpoints"]}
        group = contract.ENGINE_QUEUE_GROUP
        assert subjects == {
            **{name: (subject, group) for name, subject in ENDPOINTS.items()},
            "forwarded-cancel": (contract.engine_cancel("engine-A"), group),
            "md-snapshot": (contract.MD_SNAPSHOT_ALL, group),
            "feed-open": (contract.FEED_OPEN, group),
            "replace": (contract.REPLACE_ALL, group),
            "mass-cancel": (contract.MASS_CANCEL_ALL, group),
            "forwarded-mass-cancel": (contract.engine_mass_cancel("engine-A"), group),
            "session-open": (contract.SESSION_OPEN_ALL, group),
            "session-close": (contract.SESSION_CLOSE_ALL, group),
            "forwarded-submit": (contract.engine_submit("engine-A"), group),
            "forwarded-replace": (contract.engine_replace("engine-A"), group),
            "forwarded-status": (contract.engine_status("engine-A"), group),
        }

        before = endpoint_stats(micro_json(handle, home, "stats", contract.SERVICE_NAME), instance)
        assert all(e["num_requests"] == e["num_errors"] == 0 for e in before.values()), before

        await serve_some_requests(handle)

        stats = micro_json(handle, home, "stats", contract.SERVICE_NAME)
        after = endpoint_stats(stats, instance)
        counts = {name: (e["num_requests"], e["num_errors"]) for name, e in after.items()}
        # A rejection is an answer; only the undecodable submit is an endpoint error.
        assert counts == {
            "submit": (3, 1),
            "status": (1, 0),
            "cancel": (1, 0),
            "forwarded-cancel": (0, 0),
            "md-snapshot": (0, 0),
            "feed-open": (0, 0),
            "replace": (0, 0),
            "mass-cancel": (0, 0),
            "forwarded-mass-cancel": (0, 0),
            "session-open": (0, 0),
            "session-close": (0, 0),
            "forwarded-submit": (0, 0),
            "forwarded-replace": (0, 0),
            "forwarded-status": (0, 0),
        }
        assert after["submit"]["processing_time"] > 0
        assert after["submit"]["last_error"].startswith("400:not a bridge.v1.NewOrder")
        print(
            "\nnats micro stats bridge-engine:\n"
            + nats_cli(handle, home, "micro", "stats", contract.SERVICE_NAME)
        )

        pinged = nats_cli(handle, home, "micro", "ping", contract.SERVICE_NAME)
        assert instance in pinged, pinged
    finally:
        assert first.stop() == 0, first.log_tail()

    # Stopped cleanly: the instance left the service; the next engine is a new instance.
    with EngineProcess(handle, engine_id="engine-B", log_file=tmp_path / "b.log"):
        (listed,) = micro_json(handle, home, "ls")
        assert listed["id"] != instance
        info = micro_json(handle, home, "info", contract.SERVICE_NAME)["info"]
        assert info["metadata"] == {
            "engine_id": "engine-B",
            "contract_version": contract.CONTRACT_VERSION,
        }
        pinged = nats_cli(handle, home, "micro", "ping", contract.SERVICE_NAME)
        assert listed["id"] in pinged, pinged
        assert instance not in pinged, pinged
