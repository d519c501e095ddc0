"""``BridgeClient`` signs every order operation with its identity's NKey seed, builds subjects
only from valid account tokens and derives its inbox from its key (fake transport; against the
real server: tests/integration/test_client_security.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nats.errors
import pytest
from pydantic import SecretStr

from bridge import (
    BridgeClient,
    BridgeSettings,
    ConfigurationError,
    InvalidOrderError,
    contract,
)
from bridge.security.signing import Signer, verify
from tests.unit.fake_transport import FakeTransport, new_user_seed
from tests.unit.test_client import accepted, failing, open_client, order, settings

SEED = new_user_seed()
PUBLIC_KEY = Signer(SEED.encode()).public_key


def status_reply(_data: bytes, _headers: dict[str, str]) -> bytes:
    from bridge.v1 import orders_pb2

    return orders_pb2.OrderStatusReply(found=False).SerializeToString()


def signer_of(subject: str, data: bytes, headers: dict[str, str]) -> str:
    return verify(subject, data, headers)


async def signed_client(fake: FakeTransport, **kw: Any) -> BridgeClient:
    return await open_client(fake, nkey_seed=SEED, **kw)


# -- what is signed ------------------------------------------------------------------------


async def test_submit_cancel_and_status_are_signed_over_their_own_subjects() -> None:
    fake = FakeTransport()
    bridge = await signed_client(fake)
    fake.respond(contract.submit("ACC1"), accepted)
    fake.respond(contract.cancel("ACC1"), accepted)
    fake.respond(contract.status("ACC1"), status_reply)
    await bridge.submit(order(), correlation_id="corr-1")
    await bridge.cancel("ACC1", "o-1")
    await bridge.status("ACC1", "o-1")
    assert [s.subject for s in fake.sent] == [
        contract.submit("ACC1"),
        contract.cancel("ACC1"),
        contract.status("ACC1"),
    ]
    for sent in fake.sent:
        assert signer_of(sent.subject, sent.data, sent.headers) == PUBLIC_KEY
        assert sent.headers[contract.HEADER_SIGNER] == PUBLIC_KEY
        # The signature headers join the others; none is replaced.
        assert contract.HEADER_CORRELATION_ID in sent.headers
        assert contract.HEADER_SCHEMA in sent.headers
    assert fake.sent[0].headers[contract.HEADER_CORRELATION_ID] == "corr-1"
    assert bridge.signer == PUBLIC_KEY
    await bridge.close()


async def test_a_signature_covers_the_subject_so_it_cannot_move_to_another_account() -> None:
    fake = FakeTransport()
    bridge = await signed_client(fake)
    fake.respond(contract.submit("ACC1"), accepted)
    await bridge.submit(order())
    [sent] = fake.sent
    with pytest.raises(ValueError, match="does not verify"):
        verify(contract.submit("ACC2"), sent.data, sent.headers)
    with pytest.raises(ValueError, match="does not verify"):
        verify(sent.subject, sent.data + b"\x00", sent.headers)


async def test_queued_orders_and_batches_are_signed_beside_their_msg_id() -> None:
    fake = FakeTransport()
    bridge = await signed_client(fake)
    await bridge.enqueue(order("o-1"))
    await bridge.enqueue_batch([order("o-2"), order("o-3")])
    published = fake.publishes()
    assert [p.headers[contract.HEADER_MSG_ID] for p in published] == ["o-1", "o-2", "o-3"]
    for sent in published:
        assert sent.subject == contract.queue("ACC1")
        assert signer_of(sent.subject, sent.data, sent.headers) == PUBLIC_KEY
        assert sent.headers[contract.HEADER_CORRELATION_ID]


async def test_a_retried_request_is_signed_anew() -> None:
    """Same order, same ids, but each attempt has its own time and signature: the engine must
    not take a retry for a replay."""
    fake = FakeTransport()
    bridge = await signed_client(fake, order_retry_max_attempts=3)
    fake.respond(
        contract.submit("ACC1"),
        failing(nats.errors.NoRespondersError(), nats.errors.TimeoutError()),
    )
    await bridge.submit(order())
    sent = fake.requests(contract.submit("ACC1"))
    assert len(sent) == 3
    assert len({s.data for s in sent}) == 1
    assert len({s.headers[contract.HEADER_SIGNED_AT] for s in sent}) == 3
    assert len({s.headers[contract.HEADER_SIGNATURE] for s in sent}) == 3
    for s in sent:
        assert signer_of(s.subject, s.data, s.headers) == PUBLIC_KEY


async def test_a_retried_queued_order_is_signed_anew() -> None:
    fake = FakeTransport()
    bridge = await signed_client(fake, order_retry_max_attempts=2)
    fake.script.append("503")
    await bridge.enqueue(order("o-5"))
    sent = fake.publishes()
    assert [s.headers[contract.HEADER_MSG_ID] for s in sent] == ["o-5", "o-5"]
    assert sent[0].headers[contract.HEADER_SIGNED_AT] != sent[1].headers[contract.HEADER_SIGNED_AT]
    for s in sent:
        assert signer_of(s.subject, s.data, s.headers) == PUBLIC_KEY


async def test_signing_off_sends_no_signature_headers() -> None:
    fake = FakeTransport()
    bridge = await signed_client(fake, sign_orders=False)
    fake.respond(contract.submit("ACC1"), accepted)
    await bridge.submit(order())
    await bridge.enqueue(order("o-2"))
    for sent in fake.sent:
        assert not {
            contract.HEADER_SIGNER,
            contract.HEADER_SIGNED_AT,
            contract.HEADER_SIGNATURE,
        } & set(sent.headers)
    assert bridge.signer == PUBLIC_KEY  # the identity is still known (its inbox)


# -- the seed ------------------------------------------------------------------------------


def test_signing_without_a_seed_fails_when_the_client_is_built() -> None:
    with pytest.raises(ConfigurationError, match="nkey_seed_file") as info:
        BridgeClient(BridgeSettings(), transport=FakeTransport())
    assert "sign_orders" in str(info.value)
    assert isinstance(info.value, ValueError)


async def test_without_signing_no_seed_is_needed_and_the_role_inbox_is_used() -> None:
    fake = FakeTransport()
    bridge = BridgeClient(settings(nkey_seed=None, sign_orders=False), transport=fake)
    await bridge.connect()
    assert fake.settings is not None
    assert fake.settings.inbox_prefix == contract.inbox_prefix("orchestrator")
    assert bridge.signer is None
    await bridge.close()


async def test_the_seed_file_is_read_once_at_connect(tmp_path: Path) -> None:
    """Read at connect, not at construction, and handed to the transport inline: deleting the
    file afterwards changes nothing (reconnects do not read it again)."""
    seed_file = tmp_path / "orchestrator.nk"
    fake = FakeTransport()
    bridge = BridgeClient(settings(nkey_seed=None, nkey_seed_file=seed_file), transport=fake)
    seed_file.write_text(SEED + "\n", encoding="ascii")  # after construction: read later
    await bridge.connect()
    seed_file.unlink()
    assert fake.settings is not None
    assert fake.settings.nkey_seed_file is None
    assert fake.settings.nkey_seed == SecretStr(SEED)
    await fake.drop_connection()
    await fake.restore_connection()
    await bridge.enqueue(order())
    [sent] = fake.publishes()
    assert signer_of(sent.subject, sent.data, sent.headers) == PUBLIC_KEY
    await bridge.close()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"nkey_seed": "SUNOTASEED"}, "not a valid NKey user seed"),
        ({"nkey_seed": None, "nkey_seed_file": Path("/nonexistent/seed.nk")}, "cannot read"),
        (
            {"nkey_seed": new_user_seed().replace("SU", "SO", 1)},
            "not a valid NKey user seed|not a user's",
        ),
    ],
)
async def test_an_unusable_seed_fails_the_connect_without_showing_it(
    kw: dict[str, Any], message: str
) -> None:
    fake = FakeTransport()
    bridge = BridgeClient(settings(**kw), transport=fake)
    with pytest.raises(ConfigurationError, match=message) as info:
        await bridge.connect()
    seed = kw.get("nkey_seed")
    if seed:
        assert seed not in str(info.value)
    assert fake.connect_attempts == 0


async def test_the_inbox_prefix_is_the_identitys_unless_set() -> None:
    fake = FakeTransport()
    await signed_client(fake)
    assert fake.settings is not None
    assert fake.settings.inbox_prefix == contract.identity_inbox_prefix("orchestrator", PUBLIC_KEY)

    explicit = FakeTransport()
    await signed_client(explicit, inbox_prefix="_INBOX.custom")
    assert explicit.settings is not None
    assert explicit.settings.inbox_prefix == "_INBOX.custom"


# -- subjects from valid tokens only -------------------------------------------------------


@pytest.mark.parametrize("account", ["", "ACC.1", "ACC*", "ACC>", "a b", "_house", "x" * 33])
async def test_an_account_that_is_not_a_subject_token_is_refused_before_sending(
    account: str,
) -> None:
    fake = FakeTransport()
    bridge = await signed_client(fake)
    for call in (
        lambda: bridge.cancel(account, "o-1"),
        lambda: bridge.status(account, "o-1"),
    ):
        with pytest.raises(InvalidOrderError) as info:
            await call()
        [issue] = info.value.errors
        assert issue.field == "account"
        assert issue.rule == "string_pattern_mismatch"
    with pytest.raises(InvalidOrderError) as by_reports:
        bridge.reports(account)
    assert [e.field for e in by_reports.value.errors] == ["account"]
    assert fake.sent == []


async def test_a_report_subject_of_one_order_needs_a_valid_order_id() -> None:
    fake = FakeTransport()
    bridge = await signed_client(fake)
    with pytest.raises(InvalidOrderError) as info:
        bridge.reports("ACC1", "o.1.>")
    assert [e.field for e in info.value.errors] == ["client_order_id"]
    assert bridge.reports("ACC1", "o-1").subject == contract.executions("ACC1", "o-1")
    assert bridge.reports("ACC1").subject == contract.executions_for_account("ACC1")
