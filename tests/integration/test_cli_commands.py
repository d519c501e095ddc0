"""``bridge`` commands against a real, provisioned nats-server and the real engine: each command
runs in-process through click's runner, as the operator (or, for ``submit``, an orchestrator),
and its output and exit code are checked. One server and one engine for the module."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from prometheus_client import CollectorRegistry

from bridge import BridgeClient, contract, jetstream
from bridge.cli import cli
from bridge.metrics import ClientMetrics
from bridge.observability import serve
from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.pki import DevCredentials
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from tests.integration.metrics_helpers import market, until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(
    nats_server: ServerHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """One engine for the module; it must stop cleanly."""
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    proc = EngineProcess(nats_server, log_file=log).start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, proc.log_tail()


@pytest.fixture(scope="module")
def configs(nats_server: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Settings files of the operator and of an orchestrator."""
    root = tmp_path_factory.mktemp("cli-config")
    return {
        role: write_client_config(client_settings(nats_server, role=role), root / f"{role}.toml")
        for role in ("operator", "orchestrator")
    }


@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


def bridge(*args: str, config: Path | None = None) -> Result:
    """``bridge ARGS --config CONFIG`` in-process (the options go last, as a user types them)."""
    extra = ["--config", str(config)] if config is not None else []
    return CliRunner().invoke(cli, [*args, *extra], catch_exceptions=False)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def orders_max_msgs(handle: ServerHandle) -> int:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        return int((await nc.jetstream().stream_info(contract.ORDERS_STREAM)).config.max_msgs or 0)
    finally:
        await nc.close()


async def set_orders_max_msgs(handle: ServerHandle, value: int) -> None:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        jsm = nc.jetstream()
        config = (await jsm.stream_info(contract.ORDERS_STREAM)).config
        await jsm.update_stream(config.evolve(max_msgs=value))
    finally:
        await nc.close()


def test_provision_dry_run_on_a_provisioned_server_has_nothing_to_do(
    nats_server: ServerHandle, configs: dict[str, Path]
) -> None:
    result = bridge("provision", "--dry-run", config=configs["operator"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 11, lines  # 4 streams, 2 consumers, 4 buckets, the summary
    assert all(line.endswith(": up to date") for line in lines[:-1]), lines
    assert lines[-1] == "dry run: nothing to do"


def test_provision_on_a_fresh_server(dev_creds: DevCredentials, tmp_path: Path) -> None:
    """--dry-run lists what it would create and creates nothing; provision creates it; then
    --dry-run has nothing to do; a second provision changes nothing."""
    with LocalNatsServer(dev_creds, name="bridge-cli-fresh", log_file=tmp_path / "nats.log") as srv:
        config = write_client_config(
            client_settings(srv.handle, role="operator"), tmp_path / "op.toml"
        )
        dry = bridge("provision", "--dry-run", config=config)
        assert dry.exit_code == 0, dry.output
        lines = dry.output.splitlines()
        assert lines[:-1] == [
            *(
                f"stream {d['name']}: would create ({', '.join(d['subjects'])})"
                for d in map(jetstream.load, jetstream.STREAM_FILES)
            ),
            f"consumer {contract.ORDERS_STREAM}/{contract.ENGINE_CONSUMER}: would create",
            f"consumer {contract.ALERTS_STREAM}/{contract.SENTINEL_CONSUMER}: would create",
            f"kv {contract.ORDERS_KV_BUCKET}: would create "
            f"(stream {contract.kv_stream(contract.ORDERS_KV_BUCKET)})",
            f"kv {contract.LEASES_KV_BUCKET}: would create "
            f"(stream {contract.kv_stream(contract.LEASES_KV_BUCKET)})",
            f"kv {contract.CONFIG_KV_BUCKET}: would create "
            f"(stream {contract.kv_stream(contract.CONFIG_KV_BUCKET)})",
            f"kv {contract.SESSIONS_KV_BUCKET}: would create "
            f"(stream {contract.kv_stream(contract.SESSIONS_KV_BUCKET)})",
        ]
        assert lines[-1] == "dry run: 10 to change"
        missing = bridge("streams", config=config)  # nothing was created
        assert missing.exit_code == 1, missing.output
        assert missing.output.count("MISSING") == 7

        created = bridge("provision", config=config)
        assert created.exit_code == 0, created.output
        assert sum(": created" in line for line in created.output.splitlines()) == 10
        again = bridge("provision", "--dry-run", config=config)
        assert again.output.splitlines()[-1] == "dry run: nothing to do"
        rerun = bridge("provision", config=config)
        assert all(line.endswith("up to date") for line in rerun.output.splitlines())
        empty = bridge("alerts", config=config)  # an empty ALERTS stream
        assert (empty.exit_code, empty.output) == (0, "no alerts\n")

        # A definition that differs from the server's: --dry-run names the change, makes none.
        asyncio.run(set_orders_max_msgs(srv.handle, 1234))
        drift = bridge("provision", "--dry-run", config=config)
        want = jetstream.load("orders.json")["max_msgs"]
        assert f"stream {contract.ORDERS_STREAM}: would update (max_msgs: 1234 -> {want})" in (
            drift.output.splitlines()
        )
        assert drift.output.splitlines()[-1] == "dry run: 1 to change"
        assert asyncio.run(orders_max_msgs(srv.handle)) == 1234
        fixed = bridge("provision", config=config)
        assert f"stream {contract.ORDERS_STREAM}: updated (max_msgs: 1234 -> {want})" in (
            fixed.output.splitlines()
        )
        assert asyncio.run(orders_max_msgs(srv.handle)) == want


def test_health_of_a_serving_bridge(
    nats_server: ServerHandle, engine: EngineProcess, configs: dict[str, Path]
) -> None:
    result = bridge(
        "health",
        "--engine-url",
        engine.http_url,
        "--monitor-url",
        nats_server.monitor_url,
        config=configs["operator"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == "healthy"
    assert lines[0] == f"ok   engine {engine.http_url}/healthz: 200"
    assert lines[1].startswith(f"ok   engine {engine.http_url}/readyz: 200 ")
    assert lines[2].startswith(f"ok   server {nats_server.monitor_url}/healthz: 200")
    assert re.fullmatch(r"ok   service bridge-engine ping: connected=True engines=1 \S+", lines[3])


def test_health_fails_when_an_engine_does_not_answer(
    nats_server: ServerHandle, engine: EngineProcess, configs: dict[str, Path]
) -> None:
    # The server's monitoring port answers /healthz but has no /readyz: that engine is not ready.
    result = bridge(
        "health",
        "--engine-url",
        engine.http_url,
        "--engine-url",
        nats_server.monitor_url,
        "--monitor-url",
        nats_server.monitor_url,
        config=configs["operator"],
    )
    assert result.exit_code == 1, result.output
    assert f"FAIL engine {nats_server.monitor_url}/readyz: 404" in result.output
    assert result.output.splitlines()[-1] == "UNHEALTHY"


def test_health_fails_without_nats(configs: dict[str, Path], nats_server: ServerHandle) -> None:
    result = bridge(
        "health",
        "--engine-url",
        nats_server.monitor_url,
        "--monitor-url",
        nats_server.monitor_url,
        "--nats-url",
        "tls://127.0.0.1:1",
        config=configs["operator"],
    )
    assert result.exit_code == 1
    assert "FAIL nats tls://127.0.0.1:1: ConnectionFailedError" in result.output


def test_submit_status_cancel_and_tail(engine: EngineProcess, configs: dict[str, Path]) -> None:
    account, coid = new_id("CLI"), new_id("rest")
    submitted = bridge(
        "submit", account, "AAPL", "buy", "5", "--price", "150.00", "--tif", "gtc",
        "--client-order-id", coid, config=configs["orchestrator"],
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    assert submitted.output.startswith(f"{coid}: ACCEPTED ")

    again = bridge(
        "submit", account, "AAPL", "buy", "5", "--price", "150.00", "--tif", "gtc",
        "--client-order-id", coid, config=configs["orchestrator"],
    )  # fmt: skip
    assert again.exit_code == 0
    assert "duplicate=True" in again.output

    status = bridge("status", account, coid, config=configs["operator"])
    assert status.exit_code == 0, status.output
    assert f"{coid}: NEW cum_qty=0 leaves_qty=5" in status.output

    canceled = bridge("cancel", account, coid, config=configs["operator"])
    assert canceled.exit_code == 0, canceled.output
    assert canceled.output.startswith(f"{coid}: ACCEPTED")
    assert "CANCELED" in bridge("status", account, coid, config=configs["operator"]).output

    refused = bridge("cancel", account, coid, config=configs["operator"])  # already final
    assert refused.exit_code == 1
    assert f"{coid}: REJECTED reason=" in refused.output

    unknown = bridge("status", account, new_id("never"), config=configs["operator"])
    assert unknown.exit_code == 1
    assert "found=False" in unknown.output

    rejected = bridge("submit", account, "NOPE", "sell", "1", config=configs["orchestrator"])
    assert rejected.exit_code == 1
    assert "REJECTED reason=" in rejected.output

    queued = bridge(
        "submit", account, "AAPL", "buy", "1", "--queued", config=configs["orchestrator"]
    )
    assert queued.exit_code == 0, queued.output
    assert re.fullmatch(
        rf"cli-\w+: QUEUED stream={contract.ORDERS_STREAM} seq=\d+\n", queued.output
    )

    # The reports so far: NEW and CANCELED of the resting order, the queued market order's.
    everything = bridge("tail", account, "--since", "1", "--count", "3", "--timeout", "30",
                        config=configs["operator"])  # fmt: skip
    assert everything.exit_code == 0, everything.output
    lines = everything.output.splitlines()
    assert [line.split()[4] for line in lines[:2]] == ["NEW", "CANCELED"]
    assert all(f" {account} " in line for line in lines)
    newest = bridge("tail", account, "--order", coid, "--last", "1", "--count", "1",
                    "--timeout", "30", config=configs["operator"])  # fmt: skip
    assert newest.exit_code == 0, newest.output
    assert newest.output == lines[1] + "\n"
    # Nothing newer than the order's last report: a bounded wait that ends in exit 1.
    seq = int(lines[1].split()[0].lstrip("#"))
    idle = bridge("tail", account, "--order", coid, "--since", str(seq + 1), "--timeout",
                  "0.5", config=configs["operator"])  # fmt: skip
    assert idle.exit_code == 1
    assert idle.stdout == ""
    assert f"no report for 0.5s; last #{seq}" in idle.stderr


def test_the_operator_may_not_submit(engine: EngineProcess, configs: dict[str, Path]) -> None:
    result = bridge("submit", "ACC1", "AAPL", "buy", "1", config=configs["operator"])
    assert result.exit_code == 2
    assert "SecurityViolationError" in result.output


async def test_tail_follows_live_reports(
    nats_server: ServerHandle, engine: EngineProcess, configs: dict[str, Path]
) -> None:
    """From now on: the tail opens its reader, then an order's reports appear as lines."""
    account = new_id("LIVE")
    tail = asyncio.create_task(
        asyncio.to_thread(
            bridge, "tail", account, "--count", "2", "--timeout", "30", config=configs["operator"]
        )
    )
    operator = await connect_as(nats_server.url, nats_server.creds, "operator")
    jsm, filter_subject = operator.jetstream(), contract.executions_for_account(account)

    async def reader_open() -> bool:  # the tail's consumer exists (a server-side state)
        consumers = await jsm.consumers_info(contract.EXECUTIONS_STREAM)
        return any(c.config.filter_subject == filter_subject for c in consumers)

    try:
        await until(reader_open, "the tail's reader is open")
    finally:
        await operator.close()
    async with BridgeClient(client_settings(nats_server), metrics=ClientMetrics(None)) as client:
        order = market(account)
        assert (await client.submit(order)).accepted
    result = await asyncio.wait_for(tail, 60)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert all(order.client_order_id in line for line in lines)
    assert lines[0].split()[4] == "NEW"


def test_streams_summary(engine: EngineProcess, configs: dict[str, Path]) -> None:
    result = bridge("streams", config=configs["operator"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    for stream in (
        contract.ORDERS_STREAM,
        contract.EXECUTIONS_STREAM,
        contract.ALERTS_STREAM,
        contract.kv_stream(contract.ORDERS_KV_BUCKET),
        contract.kv_stream(contract.LEASES_KV_BUCKET),
    ):
        assert stream in rows, result.output
        assert rows[stream][1].isdigit()
    engine_consumer = rows[f"{contract.ORDERS_STREAM}/{contract.ENGINE_CONSUMER}"]
    assert [cell.isdigit() for cell in engine_consumer[1:]] == [True] * 5
    assert f"{contract.ALERTS_STREAM}/{contract.SENTINEL_CONSUMER}" in rows


async def test_top_once_shows_engine_and_orchestrator(
    nats_server: ServerHandle, engine: EngineProcess
) -> None:
    account = new_id("TOP")
    registry = CollectorRegistry()
    async with (
        BridgeClient(client_settings(nats_server), metrics=ClientMetrics(registry)) as client,
        await serve(client, port=0, registry=registry) as http,
    ):
        assert (await client.submit(market(account))).accepted
        client_url = f"http://127.0.0.1:{http.port}/metrics"
        result = await asyncio.to_thread(
                bridge, "top", "--once", "--interval", "0.2",
                "--engine-url", engine.http_url, "--client-url", client_url,
            )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"engine {engine.http_url}" in out
    assert "ready connected=True consumer_bound=True" in out
    assert re.search(r"orders/s sync\s*│\s*accepted=\d", out), out
    assert "ORDERS consumer lag" in out
    assert re.search(r"stage journal ms\s*│\s*p50=\d", out), out
    assert f"orchestrator {client_url}" in out
    assert re.search(r"connected\s*│\s*1\s", out), out
    assert re.search(r"sync order->ack ms\s*│\s*p50=\d", out), out
