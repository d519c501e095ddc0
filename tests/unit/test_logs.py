"""Unit tests for ``bridge.logs``: secrets never reach a log line; the library is quiet until
configured; JSON lines use the engine's field names."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from bridge.logs import REDACTED, configure_logging, get_logger, redact_secrets

# Syntactically valid fake NKey seeds: "S" + type letter + 56 base32 characters.
USER_SEED = "SU" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" + "QRSTUVWXYZ234567ABCDEFGH"
OPERATOR_SEED = "SO" + "A2B3C4D5E6F7G" * 4 + "HIJK"
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n"
    "-----END PRIVATE KEY-----"
)
EC_PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFake\n-----END EC PRIVATE KEY-----"


def _redact(**event: Any) -> MutableMapping[str, Any]:
    return redact_secrets(None, "info", dict(event))


def test_fake_seeds_are_well_formed() -> None:
    """The fake seeds have the real shape: 58 characters of base32 after the 'S' prefix."""
    for seed in (USER_SEED, OPERATOR_SEED):
        assert len(seed) == 58
        assert set(seed[2:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


@pytest.mark.parametrize(
    "key",
    [
        "nkey_seed",
        "seed",
        "password",
        "passwd",
        "token",
        "auth_token",
        "client_secret",
        "private_key",
        "key_pem",
        "NKEY",
        "Password",
    ],
)
def test_secret_keys_are_masked(key: str) -> None:
    """Any value under a secret-looking key is replaced by the mask, whatever its type."""
    for value in ("hunter2", 12345, b"raw", {"nested": "x"}):
        assert _redact(**{key: value})[key] == REDACTED


@pytest.mark.parametrize(
    "key", ["nkey_seed_file", "tls_key_file", "token_file", "seed_path", "private_key_path"]
)
def test_file_and_path_keys_are_not_masked(key: str) -> None:
    """Keys ending in _file or _path hold a location, not the secret, and are kept."""
    assert _redact(**{key: "/etc/bridge/pki/user.nk"})[key] == "/etc/bridge/pki/user.nk"


def test_seed_inside_a_path_value_is_still_masked() -> None:
    """Even under a *_file key, a seed embedded in the value itself is masked."""
    out = _redact(nkey_seed_file=f"oops {USER_SEED}")
    assert out["nkey_seed_file"] == f"oops {REDACTED}"


@pytest.mark.parametrize("seed", [USER_SEED, OPERATOR_SEED])
def test_seed_embedded_in_any_string_value_is_masked(seed: str) -> None:
    """An NKey seed inside the event text or any string field is replaced in place."""
    out = _redact(event=f"connecting with seed={seed} now", detail=f"[{seed}]")
    assert out["event"] == f"connecting with seed={REDACTED} now"
    assert out["detail"] == f"[{REDACTED}]"


@pytest.mark.parametrize("pem", [PEM, EC_PEM])
def test_pem_private_key_embedded_in_a_value_is_masked(pem: str) -> None:
    """A PEM private-key block inside a string value is replaced as a whole."""
    out = _redact(config=f"key follows:\n{pem}\ntrailer")
    assert out["config"] == f"key follows:\n{REDACTED}\ntrailer"
    assert "PRIVATE KEY" not in out["config"]


def test_ordinary_values_are_left_alone() -> None:
    """Ordinary keys and values, including public keys and certificates, are not touched."""
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    public_nkey = "U" + "A" * 55
    event = {
        "event": "bridge.ack",
        "client_order_id": "ord-0001",
        "account": "acct-1",
        "count": 3,
        "symbol": "SUPERCALIFRAGILISTICEXPIALIDOCIOUS",
        "cert": cert,
        "user": public_nkey,
    }
    assert _redact(**event) == event


def test_redaction_in_a_logger_pipeline() -> None:
    """As a processor in a structlog chain, redact_secrets masks before the event is emitted."""
    capture = LogCapture()
    log = structlog.wrap_logger(None, processors=[redact_secrets, capture])
    log.info("connect", nkey_seed=USER_SEED, url="tls://h:4222", note=f"s={USER_SEED}")
    assert capture.entries == [
        {
            "event": "connect",
            "log_level": "info",
            "nkey_seed": REDACTED,
            "url": "tls://h:4222",
            "note": f"s={REDACTED}",
        }
    ]


@pytest.fixture
def configured() -> Iterator[None]:
    """Restore structlog's global configuration and the root logger after a test that calls
    configure_logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("configured")
def test_configure_logging_redacts_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """The configured JSON pipeline masks secret fields and embedded seeds on stderr."""
    configure_logging("DEBUG", json=True)
    structlog.get_logger().info("login", password="hunter2", note=f"seed {USER_SEED}")
    err = capsys.readouterr().err
    assert '"password": "***"' in err
    assert "hunter2" not in err
    assert USER_SEED not in err
    assert '"message": "login"' in err


@pytest.mark.usefixtures("configured")
def test_configure_logging_redacts_exception_text(capsys: pytest.CaptureFixture[str]) -> None:
    """A seed inside a logged exception's message is masked in the output too."""
    configure_logging("DEBUG", json=True)
    try:
        raise ValueError(f"could not parse seed {USER_SEED}")
    except ValueError:
        structlog.get_logger().exception("load_failed")
    err = capsys.readouterr().err
    assert "could not parse seed" in err
    assert USER_SEED not in err


def test_the_library_is_quiet_until_the_application_configures_logging(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """No per-order debug line, and nothing at all, reaches stdout or stderr by default."""
    log = get_logger("bridge.client")
    with structlog.contextvars.bound_contextvars(client_order_id="o-1"):
        log.debug("bridge.ack", status="ACCEPTED")
        log.info("bridge.connected")
        log.warning("bridge.disconnected")
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "")
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # to the app's handlers only
    assert logging.getLogger("bridge").handlers[0].__class__ is logging.NullHandler


@pytest.mark.usefixtures("configured")
def test_json_lines_use_the_engines_field_names(capsys: pytest.CaptureFixture[str]) -> None:
    """timestamp (ISO 8601 UTC), lowercase level, message, and the ids bound to the context."""
    configure_logging("DEBUG", json=True)
    ids = {"client_order_id": "o-1", "correlation_id": "c-1", "account": "A", "symbol": "S"}
    with structlog.contextvars.bound_contextvars(**ids):
        get_logger("bridge.client").debug("bridge.ack", status="ACCEPTED", nkey_seed=USER_SEED)
        get_logger("bridge.retry").warning("bridge.retrying", attempt=1)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["message"], line["level"]) for line in lines] == [
        ("bridge.ack", "debug"),
        ("bridge.retrying", "warning"),
    ]
    for line in lines:
        assert {k: line[k] for k in ids} == ids
        assert line["timestamp"].endswith("Z")
        assert "event" not in line
    assert lines[0]["nkey_seed"] == REDACTED


@pytest.mark.usefixtures("configured")
def test_configured_level_filters_bridge_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", json=True)
    get_logger("bridge.client").debug("bridge.ack")
    get_logger("bridge.client").info("bridge.connected")
    get_logger("bridge.client").error("bridge.nats_error")
    err = capsys.readouterr().err
    assert [json.loads(line)["message"] for line in err.splitlines()] == ["bridge.nats_error"]


def test_asyncio_ssl_eof_notice_is_dropped_other_asyncio_lines_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The one harmless asyncio notice per closed TLS connection is dropped, nothing else."""
    configure_logging("WARNING", json=True)
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.warning("returning true from eof_received() has no effect when using ssl")
    asyncio_log.warning("Task was destroyed but it is pending!")
    err = capsys.readouterr().err
    messages = [json.loads(line)["message"] for line in err.splitlines()]
    assert messages == ["Task was destroyed but it is pending!"]
