"""An engine's NATS service API error answer (no payload, ``Nats-Service-Error`` headers):
recognised by the transport, mapped by the client by its code."""

from __future__ import annotations

import pytest

from bridge import OutcomeUnknownError, ProtocolError, contract
from bridge.retry import is_transient
from bridge.transport import (
    SERVICE_ERROR_CODE_HEADER,
    SERVICE_ERROR_HEADER,
    ServiceError,
    service_error,
)
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import failing, open_client, order


def test_only_replies_with_the_error_header_are_service_errors() -> None:
    assert service_error(None) is None
    assert service_error({}) is None
    assert service_error({"Bridge-Correlation-Id": "c"}) is None
    error = service_error({SERVICE_ERROR_HEADER: "not a x", SERVICE_ERROR_CODE_HEADER: "400"})
    assert error is not None
    assert (error.code, error.status) == (400, "not a x")
    # A missing or unreadable code is the worst case: an internal failure.
    for headers in ({SERVICE_ERROR_HEADER: "boom"}, {SERVICE_ERROR_HEADER: "b", "x": "1"}):
        assert (service_error(headers) or ServiceError(0, "")).code == 500


async def test_bad_request_is_a_protocol_error_and_not_retried() -> None:
    """400: the engine could not decode the request, so nothing happened; retrying the same
    bytes cannot help."""
    fake = FakeTransport()
    bridge = await open_client(fake)
    fake.respond(contract.submit("ACC1"), failing(ServiceError(400, "not a bridge.v1.NewOrder")))
    with pytest.raises(ProtocolError, match=r"not a bridge\.v1\.NewOrder") as info:
        await bridge.submit(order(), correlation_id="corr-1")
    assert (info.value.client_order_id, info.value.correlation_id) == ("o-1", "corr-1")
    assert len(fake.requests(contract.submit("ACC1"))) == 1
    assert bridge.engine_available is True


async def test_internal_failure_is_outcome_unknown_and_transient() -> None:
    """500: the engine failed while serving it (and stops): the outcome is unknown, resolved
    like a timeout."""
    fake = FakeTransport()
    bridge = await open_client(fake)
    fake.respond(contract.cancel("ACC1"), failing(*[ServiceError(500, "engine failure")] * 5))
    with pytest.raises(OutcomeUnknownError, match="engine failure") as info:
        await bridge.cancel("ACC1", "o-9")
    assert is_transient(info.value)
