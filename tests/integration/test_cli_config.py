"""``bridge config get|set|diff|history`` against a real server, with a running client that
applies (or refuses) what is set and answers with ConfigApplied."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bridge import BridgeClient, BridgeSettings
from bridge.cli import cli
from bridge.runtime_config import documents, store
from bridge_dev.engine import client_settings, write_client_config
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def operator_config(nats_server: ServerHandle, tmp_path: Path) -> Path:
    return write_client_config(
        client_settings(nats_server, role="operator"), tmp_path / "operator.toml"
    )


@pytest.fixture
async def clean(nats_server: ServerHandle) -> AsyncIterator[None]:
    yield
    nc = await connect_as(nats_server.url, nats_server.creds, "operator")
    try:
        for key in documents.CLIENT_KEYS:
            await store.delete(nc, key)
    finally:
        await nc.close()


async def bridge(config: Path, *args: str) -> Result:
    """``bridge ARGS --config CONFIG`` in-process, off the test's event loop (the client under
    test runs on it)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, [*args, "--config", str(config)], catch_exceptions=False
    )


@pytest.fixture
def client_settings_(settings: BridgeSettings) -> BridgeSettings:
    return settings.model_copy(update={"client_name": "cli-config-test"})


async def test_set_get_diff_history(
    operator_config: Path,
    client_settings_: BridgeSettings,
    nats_server: ServerHandle,
    clean: None,
) -> None:
    operator_key = dev_signer(nats_server.creds, "operator").public_key
    async with BridgeClient(client_settings_) as client:
        result = await bridge(
            operator_config, "config", "set", "routing", '{"version": 1, "default": "queued"}'
        )
        assert result.exit_code == 0, result.output
        assert (
            f"routing: revision {client.routing.revision} written, signed by {operator_key}"
            in result.output
        )
        assert 'default: (absent) -> "queued"' in result.output
        assert "client cli-config-test: applied" in result.output
        assert client.routing.default == "queued"

        result = await bridge(operator_config, "config", "get", "routing")
        assert result.exit_code == 0, result.output
        assert '"default": "queued"' in result.output
        assert f"revision {client.routing.revision}" in result.output

        result = await bridge(
            operator_config, "config", "diff", "routing", '{"version": 1, "default": "sync"}'
        )
        assert result.exit_code == 0, result.output
        assert result.output.strip() == 'default: "queued" -> "sync"'
        assert client.routing.default == "queued"  # diff writes nothing

        # Valid for the schema, refused by the client: exit 1, its field and rule printed.
        result = await bridge(
            operator_config,
            "config",
            "set",
            "client",
            '{"version": 1, "order_retry_deadline_ms": 0}',
        )
        assert result.exit_code == 1, result.output
        assert "client cli-config-test: REFUSED" in result.output
        assert "order_retry_deadline_ms: settings:" in result.output
        assert client.settings == client_settings_

        # log_levels is read by both sides; no engine runs here: named, not an error.
        result = await bridge(
            operator_config,
            "config",
            "set",
            "log_levels",
            '{"version": 1, "client": "info"}',
            "--wait",
            "0.5",
        )
        assert result.exit_code == 0, result.output
        assert "client cli-config-test: applied" in result.output
        assert "engine: no answer within 0.5s" in result.output

        result = await bridge(
            operator_config, "config", "set", "routing", '{"version": 1, "default": "sync"}'
        )
        assert result.exit_code == 0, result.output

    result = await bridge(operator_config, "config", "history", "routing")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    revisions = [line for line in lines if line.startswith("revision ")]
    assert len(revisions) >= 2
    assert all(operator_key in line or "DEL" in line for line in revisions)
    last_put = max(
        i for i, line in enumerate(lines) if line.startswith("revision ") and "PUT" in line
    )
    assert lines[last_put + 1].strip() == 'default: "queued" -> "sync"'
