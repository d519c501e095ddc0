"""The sentinel's settings: defaults here < the TOML file ``BRIDGE_SENTINEL_CONFIG_FILE`` names <
``BRIDGE_SENTINEL_*`` environment variables < keyword arguments. Unknown keys are an error.

The sentinel has two identities, each with its certificate and NKey (``nats/entitlements.toml``):
``sentinel`` in the bridge's account (raises alerts, reads the engines' refusals) and
``sentinel-system`` in the server's system account (authentication advisories, connection
listings, kicking a connection). Seeds are given by file only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge import contract

ENV_PREFIX = "BRIDGE_SENTINEL_"
CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG_FILE"


class SentinelSettings(BaseSettings):
    """Connections, sources and alert delivery of ``bridge-sentinel``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    nats_url: str = Field(
        default="tls://127.0.0.1:4222", description="Comma-separated NATS server URLs."
    )
    tls_ca_file: Path | None = Field(default=None, description="CA bundle that signed the server.")
    tls_cert_file: Path | None = Field(
        default=None, description="Client certificate of the sentinel identity (mTLS)."
    )
    tls_key_file: Path | None = Field(default=None, description="Its private key.")
    nkey_seed_file: Path = Field(description="NKey seed file of the sentinel identity.")
    inbox_prefix: str = Field(
        default=contract.inbox_prefix("sentinel"),
        description="Inbox prefix of the sentinel identity (its subscribe permission).",
    )
    system_tls_cert_file: Path | None = Field(
        default=None, description="Client certificate of the system identity (mTLS)."
    )
    system_tls_key_file: Path | None = Field(default=None, description="Its private key.")
    system_nkey_seed_file: Path = Field(
        description="NKey seed file of the system identity (system account)."
    )
    system_inbox_prefix: str = Field(
        default=contract.inbox_prefix("system"),
        description="Inbox prefix of the system identity.",
    )
    entitlements_file: Path | None = Field(
        default=None,
        description="Entitlements file: names the identity of a public NKey in alerts.",
    )
    server_log_file: Path | None = Field(
        default=None,
        description="nats-server's log file, followed for permission and TLS violations "
        "(none: those are not detected).",
    )
    log_poll_interval_ms: int = Field(
        default=50, gt=0, description="How often the log file is checked when idle."
    )
    log_max_read_bytes: int = Field(
        default=1 << 20, gt=0, description="At most this much of the log is read per check."
    )
    log_max_line_bytes: int = Field(
        default=64 << 10, gt=0, description="Longer log lines are dropped (counted)."
    )
    sys_request_timeout_ms: int = Field(
        default=1000,
        gt=0,
        description="How long a connection lookup waits for servers' replies, and a kick for "
        "its reply.",
    )
    duplicate_window_ms: int = Field(
        default=5000,
        ge=0,
        description="The same violation (kind, connection, subject) again within this window "
        "is counted, not alerted again (0: alert every one).",
    )
    alert_publish_timeout_ms: int = Field(
        default=5000, gt=0, description="How long publishing an alert waits for JetStream."
    )
    alert_webhook_url: str | None = Field(
        default=None, description="Alertmanager-format webhook (none: no webhook)."
    )
    webhook_receiver: str = Field(
        default="bridge-sentinel", description="The webhook body's `receiver`."
    )
    webhook_timeout_ms: int = Field(default=5000, gt=0, description="Timeout of one POST.")
    webhook_retry_max_attempts: int = Field(
        default=5, ge=1, description="POST attempts per batch of alerts (1 = no retry)."
    )
    webhook_retry_initial_delay_ms: int = Field(
        default=200, ge=0, description="Backoff: delay after the first failed POST."
    )
    webhook_retry_max_delay_ms: int = Field(default=5000, ge=0, description="Backoff: cap.")
    webhook_queue_size: int = Field(
        default=1000, ge=1, description="Alerts waiting for the webhook; more are dropped."
    )
    log_level: str = Field(default="INFO", description="Log level of the sentinel's lines.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.webhook_retry_initial_delay_ms > self.webhook_retry_max_delay_ms:
            raise ValueError("webhook_retry_initial_delay_ms must not exceed the max delay")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = os.environ.get(CONFIG_FILE_ENV)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"{CONFIG_FILE_ENV}={config_file!r} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
