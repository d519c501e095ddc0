"""Secrets never leave the bridge's loggers, whatever logging the application sets up (issue 12,
item 4): root logging at DEBUG with the application's own handlers and formatters, structlog
configured the application's way, the settings logged, exceptions that contain the seed. A
real, freshly generated NKey seed goes through the whole order path of the fake transport,
including a retry and a security violation; its text must not appear anywhere."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import nats.errors
import pytest
import structlog
from pydantic import SecretStr
from structlog.stdlib import ProcessorFormatter

from bridge import BridgeSettings, SecurityViolationError, contract
from bridge.logs import REDACTED, SecretsFilter, get_logger, scrub
from tests.unit.fake_transport import FakeTransport, new_user_seed
from tests.unit.test_client import accepted, failing, open_client, order

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIRealLookingKeyBytes\n"
    "-----END PRIVATE KEY-----"
)


class Everything(logging.Handler):
    """The application's handler: keeps each record formatted three ways, and its raw state."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.plain = logging.Formatter("%(levelname)s %(name)s %(message)s")
        self.json = ProcessorFormatter(  # structlog's formatter, without any redaction
            processors=[
                ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[structlog.processors.format_exc_info],
        )

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.plain.format(record))
        self.texts.append(self.json.format(record))
        self.texts.append(repr(vars(record)))
        self.texts.append(repr(record.msg) + repr(record.args))

    def dump(self) -> str:
        return "\n".join(self.texts)


@pytest.fixture
def everything() -> Iterator[Everything]:
    """Root logging at DEBUG with the application's handler; structlog configured the
    application's way (printing JSON, no redaction of its own)."""
    root, bridge = logging.getLogger(), logging.getLogger("bridge")
    handler = Everything()
    saved = (root.level, bridge.level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    bridge.setLevel(logging.NOTSET)
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(io.StringIO()),
    )
    yield handler
    structlog.reset_defaults()
    root.removeHandler(handler)
    root.setLevel(saved[0])
    bridge.setLevel(saved[1])


def assert_absent(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert secret[3:30] not in text  # not even a piece of it


async def test_the_seed_never_reaches_a_log_through_the_whole_order_path(
    everything: Everything,
) -> None:
    seed = new_user_seed()
    fake = FakeTransport()
    bridge = await open_client(fake, nkey_seed=seed, order_retry_max_attempts=2)
    settings = bridge.settings
    fake.respond(contract.submit("ACC1"), failing(nats.errors.TimeoutError()))
    fake.respond(contract.cancel("ACC1"), accepted)
    await bridge.submit(order())  # debug lines, and a retry warning
    await bridge.enqueue_batch([order("o-2"), order("o-3")])
    await bridge.cancel("ACC1", "o-1")

    # The settings, logged by the application in every usual way, through bridge loggers too.
    app = logging.getLogger("app")
    app.info("settings %s / %r", settings, settings)
    app.info("dump %s", settings.model_dump())
    app.info("json %s", settings.model_dump_json())
    log = get_logger("bridge.client")
    log.info("settings", settings=settings, dump=settings.model_dump(mode="json"))
    std = logging.getLogger("bridge.client")
    std.debug("seed %s in %r", seed, {"nested": [seed, seed.encode()]}, extra={"note": seed})
    std.debug("pem %s", PEM, extra={"private_key": "x", "token": "t0k3n"})

    # Exceptions that carry the seed, through structlog and stdlib loggers.
    try:
        raise ValueError(f"could not use seed {seed}")
    except ValueError as exc:
        log.exception("bridge.failed", error=exc, why=repr(exc))
        std.error("failed: %s", exc, exc_info=True)
        logging.getLogger("bridge.transport").warning("x", exc_info=exc)

    # A security violation's ERROR line, and what the error says.
    await fake.server_error(f'Permissions Violation for Publish to "{contract.submit("ACC1")}"')
    assert isinstance(bridge.security_violation, SecurityViolationError)
    assert_absent(str(bridge.security_violation), seed)

    dump = everything.dump()
    assert "bridge.security_violation" in dump
    assert "bridge.retrying" in dump
    assert "could not use seed" in dump  # the exception was logged, only its secret masked
    assert REDACTED in dump
    assert_absent(dump, seed, "MC4CAQAwBQYDK2VwBCIEIRealLookingKeyBytes", "t0k3n")


def test_settings_never_show_inline_secrets() -> None:
    seed = new_user_seed()
    settings = BridgeSettings(nkey_seed=SecretStr(seed))
    for text in (
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        json.dumps(settings.model_dump(mode="json")),
        settings.model_dump_json(),
    ):
        assert_absent(text, seed)
    assert settings.nkey_seed is not None
    assert settings.nkey_seed.get_secret_value() == seed


def test_every_bridge_logger_carries_the_filter_itself() -> None:
    """On the logger objects, not on a handler: whatever handlers the application installs."""
    for name in ("bridge.client", "bridge.transport", "bridge.retry", "bridge.reports", "bridge.x"):
        get_logger(name)
        filters = logging.getLogger(name).filters
        assert any(isinstance(f, SecretsFilter) for f in filters), name
    for name in ("bridge",):
        filters = logging.getLogger(name).filters
        assert any(isinstance(f, SecretsFilter) for f in filters), name


def test_scrub_reaches_into_nested_values() -> None:
    seed = new_user_seed()

    class Holder:
        def __str__(self) -> str:
            return f"Holder({seed})"

    value: dict[str, Any] = {
        "a": [seed, (f"x{seed}",), {"deep": {seed}}],
        "password": "hunter2",
        "raw": seed.encode(),
        "obj": Holder(),
        "n": 5,
        "ok": "bridge.v1.orders.submit.ACC1",
    }
    out = scrub(value)
    assert_absent(repr(out), seed)
    assert "hunter2" not in repr(out)
    assert (out["n"], out["ok"]) == (5, "bridge.v1.orders.submit.ACC1")
