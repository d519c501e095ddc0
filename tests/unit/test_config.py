"""Unit tests for ``bridge.config.BridgeSettings``: defaults, file, environment, keywords."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from bridge.config import BridgeSettings

SEED = "SU" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" + "A" * 24


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any BRIDGE_* variable of the surrounding shell so tests see only their own."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


def _write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("BRIDGE_CONFIG_FILE", str(path))
    return path


def test_defaults() -> None:
    """Without file, environment or keywords every knob has its documented default."""
    s = BridgeSettings()
    assert s.nats_url == "tls://127.0.0.1:4222"
    assert s.tls_ca_file is None
    assert s.tls_cert_file is None
    assert s.tls_key_file is None
    assert s.nkey_seed_file is None
    assert s.nkey_seed is None
    assert s.inbox_prefix is None  # derived from the seed at connect (bridge._identity)
    assert s.sign_orders is True
    assert s.client_name == "bridge-orchestrator"
    assert s.connect_timeout_ms == 2000
    assert s.request_timeout_ms == 2000
    assert s.publish_timeout_ms == 5000
    assert s.max_inflight == 1024
    assert s.subscription_capacity == 1024


def test_env_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """BRIDGE_REQUEST_TIMEOUT_MS replaces the default and is parsed as an int."""
    monkeypatch.setenv("BRIDGE_REQUEST_TIMEOUT_MS", "750")
    assert BridgeSettings().request_timeout_ms == 750


def test_env_path_is_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A path knob from the environment becomes a Path."""
    monkeypatch.setenv("BRIDGE_TLS_CA_FILE", str(tmp_path / "ca.pem"))
    assert BridgeSettings().tls_ca_file == tmp_path / "ca.pem"


def test_bad_env_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-positive timeout from the environment fails validation, naming the knob."""
    monkeypatch.setenv("BRIDGE_REQUEST_TIMEOUT_MS", "0")
    with pytest.raises(pydantic.ValidationError, match="request_timeout_ms"):
        BridgeSettings()


def test_precedence_file_env_kwargs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TOML file beats defaults, BRIDGE_* env beats the file, keywords beat env."""
    _write_config(
        tmp_path,
        monkeypatch,
        'request_timeout_ms = 111\nconnect_timeout_ms = 222\nclient_name = "from-file"\n'
        "max_inflight = 7\n",
    )
    monkeypatch.setenv("BRIDGE_REQUEST_TIMEOUT_MS", "333")
    monkeypatch.setenv("BRIDGE_CONNECT_TIMEOUT_MS", "444")
    s = BridgeSettings(connect_timeout_ms=555)
    assert s.max_inflight == 7  # file only
    assert s.client_name == "from-file"  # file only
    assert s.request_timeout_ms == 333  # env over file
    assert s.connect_timeout_ms == 555  # keyword over env over file
    assert s.publish_timeout_ms == 5000  # default


def test_unknown_key_in_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown key in the TOML file fails validation with an error that names the key."""
    _write_config(tmp_path, monkeypatch, "request_timeout_ms = 100\nrequest_timeout = 5\n")
    with pytest.raises(pydantic.ValidationError) as info:
        BridgeSettings()
    errors = info.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(("request_timeout",), "extra_forbidden")]


def test_unknown_keyword_is_rejected() -> None:
    """An unknown keyword argument is rejected too (extra=forbid)."""
    with pytest.raises(pydantic.ValidationError, match="nats_urls"):
        BridgeSettings(nats_urls="tls://x:4222")  # type: ignore[call-arg]


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after creation."""
    s = BridgeSettings()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.request_timeout_ms = 1  # type: ignore[misc]


def test_nkey_seed_is_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nkey_seed is a SecretStr: readable on purpose, never shown by repr() or str()."""
    _write_config(tmp_path, monkeypatch, f'nkey_seed = "{SEED}"\n')
    s = BridgeSettings()
    assert isinstance(s.nkey_seed, pydantic.SecretStr)
    assert s.nkey_seed.get_secret_value() == SEED
    assert SEED not in repr(s)
    assert SEED not in str(s)
    assert SEED not in repr(s.nkey_seed)


def test_nkey_seed_from_env_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """BRIDGE_NKEY_SEED is read into a SecretStr and kept out of repr()."""
    monkeypatch.setenv("BRIDGE_NKEY_SEED", SEED)
    s = BridgeSettings()
    assert s.nkey_seed is not None
    assert s.nkey_seed.get_secret_value() == SEED
    assert SEED not in repr(s)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("retry_max_attempts", "order_retry_max_attempts"),
        ("retry_deadline_ms", "order_retry_deadline_ms"),
        ("report_buffer", "subscription_capacity"),
    ],
)
def test_renamed_knob_is_refused_naming_the_new_one(
    old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old knob name, as keyword, TOML key or BRIDGE_<OLD> variable, is an error that names
    the new knob, not silently ignored."""
    message = f"{old} was renamed {new}"
    with pytest.raises(pydantic.ValidationError, match=message):
        BridgeSettings(**{old: 5})  # type: ignore[arg-type]
    monkeypatch.setenv(f"BRIDGE_{old.upper()}", "5")
    with pytest.raises(pydantic.ValidationError, match=message):
        BridgeSettings()
    monkeypatch.delenv(f"BRIDGE_{old.upper()}")
    _write_config(tmp_path, monkeypatch, f"{old} = 5\n")
    with pytest.raises(pydantic.ValidationError, match=message):
        BridgeSettings()


def test_new_knob_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The renamed knobs are read under their new names from the environment."""
    monkeypatch.setenv("BRIDGE_ORDER_RETRY_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("BRIDGE_ORDER_RETRY_DEADLINE_MS", "1234")
    monkeypatch.setenv("BRIDGE_SUBSCRIPTION_CAPACITY", "64")
    s = BridgeSettings()
    assert (s.order_retry_max_attempts, s.order_retry_deadline_ms) == (7, 1234)
    assert s.subscription_capacity == 64
