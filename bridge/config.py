"""Client settings: every default in one place, overridden by a TOML file, then by environment.

Precedence (lowest to highest): defaults here < the TOML file named by ``BRIDGE_CONFIG_FILE``
< ``BRIDGE_*`` environment variables < keyword arguments. Unknown keys are an error. A knob with
the same name as one of the engine's (``engine-rs/src/config.rs``) means the same thing there;
knobs that differ have different names (``order_retry_*`` here, ``jetstream_retry_*`` there).
A renamed knob given under its old name (keyword, TOML key or ``BRIDGE_<OLD>`` variable) is an
error naming the new knob (``RENAMED_KNOBS``), never silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge.contract import SESSION_ID_PATTERN

RENAMED_KNOBS: dict[str, str] = {
    "retry_max_attempts": "order_retry_max_attempts",
    "retry_deadline_ms": "order_retry_deadline_ms",
    "report_buffer": "subscription_capacity",
}
"""Old knob name -> its new name. An old name is refused, naming the new one."""


class BridgeSettings(BaseSettings):
    """Connection and behaviour settings of a ``BridgeClient``."""

    model_config = SettingsConfigDict(env_prefix="BRIDGE_", extra="forbid", frozen=True)

    nats_url: str = Field(
        default="tls://127.0.0.1:4222",
        description="Comma-separated NATS server URLs.",
    )
    tls_ca_file: Path | None = Field(default=None, description="CA bundle that signed the server.")
    tls_cert_file: Path | None = Field(default=None, description="Client certificate (mTLS).")
    tls_key_file: Path | None = Field(default=None, description="Client private key (mTLS).")
    nkey_seed_file: Path | None = Field(default=None, description="NKey user seed file.")
    nkey_seed: SecretStr | None = Field(
        default=None, description="NKey user seed given inline (prefer nkey_seed_file)."
    )
    inbox_prefix: str | None = Field(
        default=None,
        description="Inbox prefix; must match the identity's subscribe permission. None (the "
        "default) derives it from the NKey seed: the identity's own inbox "
        "(contract.identity_inbox_prefix('orchestrator', <public key of the seed>)), or "
        "contract.inbox_prefix('orchestrator') when no seed is configured.",
    )
    sign_orders: bool = Field(
        default=True,
        description="Sign every order operation (submit, cancel, status, queued) with the "
        "identity's NKey seed (nkey_seed_file or nkey_seed, then required); the engine refuses "
        "unsigned ones unless its require_signatures is off.",
    )
    client_name: str = Field(default="bridge-orchestrator", description="Name shown by the server.")
    connect_timeout_ms: int = Field(default=2000, gt=0, description="Per-attempt connect timeout.")
    connect_deadline_ms: int = Field(
        default=10000, gt=0, description="How long the first connect keeps retrying (backoff)."
    )
    reconnect_initial_delay_ms: int = Field(
        default=50, ge=0, description="Backoff: first delay after a failed (re)connect or request."
    )
    reconnect_max_delay_ms: int = Field(default=2000, ge=0, description="Backoff: delay cap.")
    reconnect_jitter_ms: int = Field(
        default=100, ge=0, description="Backoff: uniform random extra delay, up to this."
    )
    max_reconnect_attempts: int = Field(
        default=-1,
        ge=-1,
        description="Consecutive failed reconnects before giving up; -1 = never give up.",
    )
    ping_interval_ms: int = Field(
        default=5000, gt=0, description="Client PINGs; 2 unanswered ones trigger a reconnect."
    )
    order_retry_max_attempts: int = Field(
        default=3, ge=1, description="Attempts of one order operation (1 = no retry)."
    )
    order_retry_deadline_ms: int = Field(
        default=10000, gt=0, description="Retries of one operation stop after this long."
    )
    request_timeout_ms: int = Field(
        default=2000, gt=0, description="How long submit/cancel/status wait for the engine."
    )
    publish_timeout_ms: int = Field(
        default=5000, gt=0, description="How long a queued publish waits for JetStream's ack."
    )
    max_inflight: int = Field(
        default=1024, gt=0, description="Queued publishes awaiting a JetStream ack at once."
    )
    backpressure_wait_ms: int = Field(
        default=5000,
        ge=0,
        description="How long a queued publish waits for an in-flight slot before "
        "BackpressureError (0 = fail at once).",
    )
    queued_batch_max_orders: int = Field(
        default=256,
        ge=0,
        le=1024,
        description="Queued orders of one account per OrderBatch message (contract 1.2), at "
        "most the contract's MAX_BATCH_ORDERS; 0 = never batch (one message per order). "
        "Batches are sent only when every engine speaks contract 1.2 or later.",
    )
    queued_batch_max_bytes: int = Field(
        default=61440,
        ge=4200,
        le=61440,
        description="Encoded bytes of one OrderBatch message at most (the contract's "
        "MAX_BATCH_BYTES, within the ORDERS stream's max_msg_size); at least one whole order.",
    )
    enqueue_linger_ms: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Concurrent enqueue() calls share batch messages: while one is in flight, "
        "an order waits for it at most this long, then goes with those that arrived meanwhile "
        "(an idle client sends at once; earlier when queued_batch_max_orders wait); 0 = off, "
        "each call sends its own. Only while orders travel in batches (bridge._linger).",
    )
    subscription_capacity: int = Field(
        default=1024,
        ge=2,
        le=65536,
        description="Messages one subscription buffers at most: a report stream's pull window; "
        "a slower reader leaves the rest in EXECUTIONS, nothing is dropped.",
    )

    session_id: str | None = Field(
        default=None,
        pattern=SESSION_ID_PATTERN,
        description="Open this orchestrator session at connect (None: no session): it is "
        "heartbeated, stamped on every order sent without one, renewed after a reconnect and "
        "closed on close(); the engines cancel its resting orders when it is lost "
        "(bridge.session).",
    )
    session_grace_ms: int = Field(
        default=0,
        ge=0,
        lt=2**32,
        description="The grace the session asks for: how long without a heartbeat before its "
        "orders are canceled (0 = the engine's session_default_grace_ms; clamped to its bounds).",
    )
    session_cancel_on_disconnect: bool = Field(
        default=True,
        description="Ask the engines to cancel the session's resting orders when it is lost.",
    )
    session_cancel_on_close: bool = Field(
        default=False,
        description="close() closes the session with cancel_orders: its resting orders are "
        "canceled (cancel on logout); else they stay, no longer protected.",
    )

    runtime_config: bool = Field(
        default=True,
        description="Watch the runtime configuration bucket (bridge_config) and apply its "
        "client, routing and log_levels documents while running (bridge.runtime_config).",
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_knobs(cls, data: Any) -> Any:
        given = set(data) if isinstance(data, dict) else set()
        env = {name.upper() for name in os.environ}
        for old, new in RENAMED_KNOBS.items():
            if old in given or f"BRIDGE_{old.upper()}" in env:
                raise ValueError(f"{old} was renamed {new} (BRIDGE_{new.upper()})")
        return data

    @model_validator(mode="after")
    def _check_retry_knobs(self) -> Self:
        if self.max_reconnect_attempts == 0:
            raise ValueError("max_reconnect_attempts must be -1 (never give up) or at least 1")
        if self.reconnect_initial_delay_ms > self.reconnect_max_delay_ms:
            raise ValueError("reconnect_initial_delay_ms must not exceed reconnect_max_delay_ms")
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
        config_file = os.environ.get("BRIDGE_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                # A typo in the path must not silently fall back to the defaults.
                raise FileNotFoundError(f"BRIDGE_CONFIG_FILE={config_file!r} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
