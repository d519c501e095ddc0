"""Contract versions on the client side (N-1 on the wire, see schemas/README.md).

* What this client declares: every request and queued order carries ``Bridge-Schema-Version:
  CONTRACT_VERSION`` (:func:`headers`). An engine refuses another major (reason
  ``UNSUPPORTED_VERSION``), accepts any minor of its own, and takes a message without the header
  as contract 1.0.
* What "no responders" means for a request that came with a later contract than 1.0
  (:data:`INTRODUCED`: replace, mass cancel, sessions): an engine of contract 1.0 does not serve
  its subject. :func:`no_responders` pings the engines' micro service (``$SRV.PING.bridge-engine``,
  which the orchestrator may publish): when an engine answers and speaks an older contract (its
  service metadata ``contract_version``, absent on a 1.0 engine), the request is unsupported
  (``UnsupportedOperationError``, not retried); when none answers, or the one that answers
  speaks the request's contract (it is stopping or starting: its endpoints are not subscribed
  yet or any more), the engines are unavailable (``EngineUnavailableError``, retried).

This happens in the one request path every request-reply operation takes
(``bridge._requests.Requests._request``), so that each operation added later gets it by naming
its message here.
"""

from __future__ import annotations

import json

import nats.errors

from bridge import contract
from bridge.errors import BridgeError, EngineUnavailableError, UnsupportedOperationError
from bridge.transport import ServiceError, Transport

UNDECLARED = "1.0"
"""The contract of a sender, or engine, that does not say: 1.0 (before the header existed)."""

ENGINE_CONTRACT_KEY = "contract_version"
"""Key of an engine's contract version in its micro service metadata (``nats micro info``)."""

INTRODUCED: dict[str, str] = {
    "bridge.v1.ReplaceRequest": "1.1",
    "bridge.v1.MassCancelRequest": "1.1",
    "bridge.v1.SessionOpen": "1.1",
    "bridge.v1.SessionClose": "1.1",
}
"""The contract version each request message came with, for those after 1.0 (full protobuf
name; tests/unit/test_versions.py holds it to the frozen 1.0 contract's messages)."""


def headers() -> dict[str, str]:
    """The version header of every message this client sends."""
    return {contract.HEADER_SCHEMA_VERSION: contract.CONTRACT_VERSION}


def parse(version: str) -> tuple[int, int] | None:
    """``major.minor`` as numbers (None if it is not that: decimal digits, one dot)."""
    major, dot, minor = version.partition(".")
    if not dot or not (major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()):
        return None
    return int(major), int(minor)


def _older(version: str, than: str) -> bool:
    """True when ``version`` is before ``than`` (an unparsable version counts as 1.0)."""
    return (parse(version) or (1, 0)) < (parse(than) or (1, 0))


def engine_contract(ping_answer: bytes) -> tuple[str, str] | None:
    """(engine id, contract version) of an engine's ping answer; None if it is not one."""
    try:
        answer = json.loads(ping_answer)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("name") != contract.SERVICE_NAME:
        return None
    metadata = answer.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    engine_id = metadata.get("engine_id") or answer.get("id") or "?"
    version = metadata.get(ENGINE_CONTRACT_KEY)
    return str(engine_id), version if isinstance(version, str) and version else UNDECLARED


async def no_responders(
    transport: Transport,
    *,
    operation: str,
    message: str,
    subject: str,
    timeout: float,
    client_order_id: str | None,
    correlation_id: str | None,
) -> BridgeError:
    """The error a "no responders" answer to a request of ``message`` (full protobuf name) on
    ``subject`` amounts to: ``UnsupportedOperationError`` when the request came after 1.0 and
    the engine that answers the service ping speaks an older contract, else
    ``EngineUnavailableError``."""
    unavailable = EngineUnavailableError(
        f"no engine is serving {subject}",
        client_order_id=client_order_id,
        correlation_id=correlation_id,
    )
    needs = INTRODUCED.get(message)
    if needs is None:
        return unavailable
    try:
        answer = await transport.request(
            contract.service_ping(contract.SERVICE_NAME), b"", timeout=timeout, headers={}
        )
    except (nats.errors.Error, TimeoutError, ServiceError):
        return unavailable  # no engine answers (or none in time): none is up
    engine = engine_contract(answer)
    if engine is None or not _older(engine[1], needs):
        return unavailable
    engine_id, version = engine
    return UnsupportedOperationError(
        f"{operation} needs contract {needs} or later, and the engines speak {version} "
        f"(engine {engine_id} answers, none serves {subject}): upgrade the engines",
        operation=operation,
        min_contract=needs,
        engine_contract=version,
        engine_ids=(engine_id,),
        client_order_id=client_order_id,
        correlation_id=correlation_id,
    )
