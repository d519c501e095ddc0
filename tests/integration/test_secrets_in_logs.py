"""No secret generated at set-up reaches a log, on either side.

The engine runs at debug level and the client process logs everything at DEBUG through a root
handler of the application's own (not the bridge's ``configure_logging``), through the whole
order path and the security failures. Then both logs are searched for every secret under the
credentials directory: each NKey seed, and each line of each private key.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import nkeys
import pytest

from bridge import (
    BridgeClient,
    BridgeError,
    Order,
    OrderType,
    SecurityViolationError,
    Side,
    TimeInForce,
    contract,
)
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer
from tests.nats_leaks import refused_connections

pytestmark = pytest.mark.timeout(180)


def read(path: Path) -> str:
    return path.read_text(errors="replace")


def write_stranger_seed(path: Path) -> Path:
    """A valid NKey seed nobody is entitled with."""
    path.write_bytes(nkeys.encode_seed(bytes(range(7, 39)), nkeys.PREFIX_BYTE_USER))
    return path


def secrets_under(root: Path) -> list[str]:
    """Every seed and every private key line generated under ``root``."""
    found: list[str] = []
    for path in root.rglob("*"):
        if path.suffix == ".nk":
            found.append(path.read_text().strip())
        elif path.suffix == ".pem" and "key" in path.name:
            found += [
                line.strip()
                for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("-----")
            ]
    return [s for s in found if len(s) >= 16]


@pytest.fixture
def client_log(tmp_path: Path) -> Iterator[Path]:
    """The application's own logging: root at DEBUG, every record's message and args."""
    path = tmp_path / "client.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(args)r"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def order(account: str) -> Order:
    return Order(
        client_order_id=f"s-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("3"),
        limit_price=Decimal("0.01"),
        time_in_force=TimeInForce.DAY,
    )


async def test_no_secret_in_either_log(
    nats_server: ServerHandle, tmp_path: Path, client_log: Path
) -> None:
    creds = nats_server.creds
    account = f"SEC-{uuid.uuid4().hex[:6]}"
    engine = EngineProcess(
        nats_server, log_file=tmp_path / "engine.log", env={"BRIDGE_LOG": "debug"}
    ).start()
    log = logging.getLogger("test.app")
    try:
        settings = client_settings(nats_server)
        log.debug("settings %s", settings)
        log.debug("settings repr %r", settings)
        # The whole order path.
        async with BridgeClient(settings) as bridge, bridge.reports(account) as reports:
            o = order(account)
            ack = await bridge.submit(o)
            assert ack.accepted, ack
            await reports.next(timeout=10)
            await bridge.status(account, o.client_order_id)
            await bridge.cancel(account, o.client_order_id)
            queued = await bridge.enqueue(order(account))
            log.debug("queued %s", queued)

        # Security failures: unsigned, badly signed, a forbidden subject, an unknown key, no
        # client certificate.
        nc = await connect_as(nats_server.url, creds, "orchestrator")
        try:
            data = order(account).to_proto().SerializeToString()
            subject = contract.submit(account)
            unsigned = await nc.request(subject, data, timeout=10)
            assert orders_pb2.OrderAck.FromString(unsigned.data).reason == (
                orders_pb2.REJECT_REASON_UNSIGNED
            )
            headers = dev_signer(creds).headers(subject, data + b"x")
            bad = await nc.request(subject, data, timeout=10, headers=headers)
            assert orders_pb2.OrderAck.FromString(bad.data).reason == (
                orders_pb2.REJECT_REASON_BAD_SIGNATURE
            )
        finally:
            await nc.close()
        async with BridgeClient(client_settings(nats_server, "desk-a")) as desk_a:
            with pytest.raises(SecurityViolationError):
                # DESK-B is not desk-a's account: a permissions violation.
                await desk_a.submit(order("DESK-B"))
        stranger = write_stranger_seed(tmp_path / "stranger.nk")
        with pytest.raises(BridgeError), refused_connections():
            async with BridgeClient(
                settings.model_copy(update={"nkey_seed_file": stranger, "connect_deadline_ms": 500})
            ):
                pass
        with pytest.raises((BridgeError, ssl.SSLError, OSError)), refused_connections():
            async with BridgeClient(
                settings.model_copy(
                    update={"tls_cert_file": None, "tls_key_file": None, "connect_deadline_ms": 500}
                )
            ):
                pass
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()

    secrets = [*secrets_under(creds.root), *secrets_under(tmp_path)]
    assert len(secrets) > 10
    engine_text, client_text = read(engine.log_file), read(client_log)
    assert '"level":"debug"' in engine_text  # both really logged at debug
    assert "DEBUG" in client_text
    for secret in secrets:
        assert secret not in engine_text, "a secret is in the engine's log"
        assert secret not in client_text, "a secret is in the client's log"
