"""``bridge alerts``: an engine refusal, read back from ALERTS by the operator's command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import nats.js.errors
from nats.aio.client import Client

from bridge import contract
from bridge.v1 import orders_pb2, security_pb2
from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.server import ServerHandle, connect_as
from tests.integration.authz_helpers import new_id, new_order, orchestrator


async def wait_for_stored_alert(operator: Client, coid: str, timeout: float = 30) -> None:
    """Wait until ALERTS holds the engine's refusal of ``coid`` (the alert is published off the
    order path, after the answer)."""
    js, subject = operator.jetstream(), contract.alert("engine", "unsigned")
    async with asyncio.timeout(timeout):
        while True:  # each turn is a round trip to the server: a bounded poll
            try:
                msg = await js.get_last_msg(contract.ALERTS_STREAM, subject)
                if security_pb2.SecurityAlert.FromString(msg.data or b"").client_order_id == coid:
                    return
            except nats.js.errors.NotFoundError:
                pass
            await asyncio.sleep(0.05)  # polling interval of a server-side state


def run_alerts(handle: ServerHandle, tmp_path: Path, *args: str) -> str:
    config = write_client_config(client_settings(handle, role="operator"), tmp_path / "op.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "alerts", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_alerts_prints_an_engine_refusal(nats_server: ServerHandle, tmp_path: Path) -> None:
    account, coid = new_id("AL"), new_id("ord")
    engine = EngineProcess(nats_server, log_file=tmp_path / "engine.log").start()
    try:
        operator = await connect_as(nats_server.url, nats_server.creds, "operator")
        nc = await orchestrator(nats_server)
        try:
            reply = await nc.request(contract.submit(account), new_order(account, coid), timeout=10)
            ack = orders_pb2.OrderAck.FromString(reply.data)
            assert ack.reason == orders_pb2.REJECT_REASON_UNSIGNED
            await wait_for_stored_alert(operator, coid)
        finally:
            await nc.close()
            await operator.close()
    finally:
        assert engine.stop() == 0, engine.log_tail()
    out = run_alerts(nats_server, tmp_path, "--last", "50")
    line = next(line for line in out.splitlines() if coid in line)
    assert " engine unsigned " in line
    assert f"account='{account}'" in line
    assert "action='refused'" in line
