"""The sentinel's settings: its own env prefix, a TOML file, required seeds, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge import contract
from bridge.security.sentinel import _Recent
from bridge.security.sentinel_config import SentinelSettings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRIDGE_SENTINEL_NKEY_SEED_FILE", str(tmp_path / "s.nk"))
    monkeypatch.setenv("BRIDGE_SENTINEL_SYSTEM_NKEY_SEED_FILE", str(tmp_path / "y.nk"))
    monkeypatch.setenv("BRIDGE_SENTINEL_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("BRIDGE_NATS_URL", "tls://elsewhere:1")  # the client's, not ours
    s = SentinelSettings()
    assert s.nkey_seed_file == tmp_path / "s.nk"
    assert s.alert_webhook_url == "http://127.0.0.1:9/hook"
    assert s.nats_url == "tls://127.0.0.1:4222"
    assert s.inbox_prefix == contract.inbox_prefix("sentinel")
    assert s.server_log_file is None
    assert s.webhook_retry_max_attempts >= 1


def test_seed_files_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_SENTINEL_NKEY_SEED_FILE", raising=False)
    with pytest.raises(ValidationError, match="nkey_seed_file"):
        SentinelSettings()


def test_toml_file_below_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text(
        'nkey_seed_file = "/a.nk"\nsystem_nkey_seed_file = "/b.nk"\n'
        "webhook_retry_max_attempts = 2\nlog_poll_interval_ms = 20\n"
    )
    monkeypatch.setenv("BRIDGE_SENTINEL_CONFIG_FILE", str(config))
    monkeypatch.setenv("BRIDGE_SENTINEL_LOG_POLL_INTERVAL_MS", "30")
    s = SentinelSettings()
    assert (s.webhook_retry_max_attempts, s.log_poll_interval_ms) == (2, 30)


def test_unknown_keys_and_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        SentinelSettings(nkey_seed_file="a", system_nkey_seed_file="b", webhook="x")  # type: ignore[call-arg]
    monkeypatch.setenv("BRIDGE_SENTINEL_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        SentinelSettings(nkey_seed_file="a", system_nkey_seed_file="b")


def test_recent_forgets_after_its_window() -> None:
    recent = _Recent(window_s=3600)
    assert not recent.seen("a")
    assert recent.seen("a")
    assert not recent.seen("b")
    instant = _Recent(window_s=0)
    assert not instant.seen("a")
    assert not instant.seen("a")
