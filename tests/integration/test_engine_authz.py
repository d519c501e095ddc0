"""Issue 12: the engine authorizes every order operation itself (real nats-server, real engine).

Each refusal kind (unsigned, bad signature, unknown signer, expired, replayed, account
mismatch, not entitled) is answered REJECTED with its reason and a text naming the check and
the values compared, raises a SecurityAlert on the ALERTS stream and an ERROR line, and
executes nothing (no report in EXECUTIONS, status not found); a valid signed order afterwards
is accepted and its signer recorded in every report. Queued orders, cancels and status queries
are checked the same way. The entitlements file is re-read on SIGHUP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from bridge import contract
from bridge.v1 import orders_pb2, security_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle
from bridge_dev.signing import dev_signer, signed
from tests.faults.harness import stored_reports, wait_for_ack_floor, wait_for_finals
from tests.integration.authz_helpers import (
    ask,
    cancel_request,
    entitlements_file,
    fresh_signer,
    log_lines,
    new_id,
    new_order,
    orchestrator,
    signed_status,
    signed_submit,
    status_request,
    violation_token,
    wait_for_alert,
    wait_for_log,
)

pytestmark = pytest.mark.integration

REJECTED = orders_pb2.ACK_STATUS_REJECTED
ACCEPTED = orders_pb2.ACK_STATUS_ACCEPTED
MINUTE_NS = 60_000_000_000

# case -> (reject reason, violation kind, words of the text)
SUBMIT_CASES: dict[str, tuple[int, int, str]] = {
    "unsigned": (
        orders_pb2.REJECT_REASON_UNSIGNED,
        security_pb2.SECURITY_VIOLATION_KIND_UNSIGNED,
        f"unsigned: no {contract.HEADER_SIGNATURE} header",
    ),
    "bad_signature": (
        orders_pb2.REJECT_REASON_BAD_SIGNATURE,
        security_pb2.SECURITY_VIOLATION_KIND_BAD_SIGNATURE,
        "does not verify over subject",
    ),
    "unknown_signer": (
        orders_pb2.REJECT_REASON_BAD_SIGNATURE,
        security_pb2.SECURITY_VIOLATION_KIND_BAD_SIGNATURE,
        "is not in the entitlements",
    ),
    "expired": (
        orders_pb2.REJECT_REASON_SIGNATURE_EXPIRED,
        security_pb2.SECURITY_VIOLATION_KIND_SIGNATURE_EXPIRED,
        "ms before the engine's clock",
    ),
    "account_mismatch": (
        orders_pb2.REJECT_REASON_ACCOUNT_MISMATCH,
        security_pb2.SECURITY_VIOLATION_KIND_ACCOUNT_MISMATCH,
        "subject account",
    ),
}


@pytest.mark.parametrize("case", sorted(SUBMIT_CASES))
async def test_refused_submit_is_answered_alerted_and_never_executed(
    engine: EngineProcess, nats_server: ServerHandle, case: str
) -> None:
    """Each refusal: REJECTED with its reason and text, an alert on ALERTS with the details, an
    ERROR line without secrets, no record and no report; a valid signed order is accepted."""
    reason, kind, words = SUBMIT_CASES[case]
    signer = dev_signer(nats_server.creds)
    account, client_order_id, correlation_id = new_id("Z"), new_id("ord"), new_id("corr")
    subject = contract.submit(account)
    payload = new_order(account, client_order_id)
    headers = signer.headers(subject, payload)
    if case == "unsigned":
        headers = {}
    elif case == "bad_signature":
        payload = new_order(account, client_order_id, qty=900)  # not what was signed
    elif case == "unknown_signer":
        headers = fresh_signer()[0].headers(subject, payload)
    elif case == "expired":
        headers = signer.headers(subject, payload, now_ns=time.time_ns() - 2 * MINUTE_NS)
    elif case == "account_mismatch":
        payload = new_order(new_id("OTHER"), client_order_id)
        headers = signer.headers(subject, payload)

    nc = await orchestrator(nats_server)
    try:
        ack = orders_pb2.OrderAck.FromString(
            await ask(nc, subject, payload, headers, correlation_id)
        )
        assert (ack.status, ack.reason) == (REJECTED, reason), ack
        assert words in ack.text, ack.text
        assert (ack.account, ack.client_order_id) == (account, client_order_id)
        if case == "account_mismatch":
            assert ack.text.startswith(f"subject account {account} != order account OTHER-")

        alert_subject, alert = await wait_for_alert(nats_server, correlation_id)
        assert alert_subject == contract.alert("engine", violation_token(kind))
        assert alert.kind == kind
        assert (alert.source, alert.action, alert.engine_id) == ("engine", "refused", "engine-1")
        assert (alert.subject, alert.account) == (subject, account)
        assert alert.client_order_id == client_order_id
        assert alert.reason == ack.text
        assert alert.alert_id
        assert alert.time_unix_ns > 0
        if case in ("account_mismatch", "expired"):
            assert (alert.identity, alert.nkey) == ("orchestrator", signer.public_key)

        # Nothing was executed: no report, and the id is unknown to the engine.
        assert await stored_reports(nats_server, account) == []
        assert not (await signed_status(nc, signer, account, client_order_id)).found
        # The engine still serves signed orders, and records who signed them.
        good = new_id("ok")
        assert (await signed_submit(nc, signer, account, good)).status == ACCEPTED
        reports = await wait_for_finals(nats_server, account, {good}, timeout=30)
        assert {r.signer for r in reports} == {signer.public_key}
    finally:
        await nc.close()

    line = next(
        x
        for x in log_lines(engine)
        if x.get("message") == "order operation refused" and x["correlation_id"] == correlation_id
    )
    assert line["level"] == "error"
    assert (line["subject"], line["kind"]) == (subject, violation_token(kind))
    assert line["reason"] == ack.text
    seed = nats_server.creds.role("orchestrator").seed_file.read_text().strip()
    assert seed not in engine.log_file.read_text()


async def test_replayed_submit_is_refused_and_a_resigned_one_is_a_duplicate(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """The same bytes and headers twice: the copy is REJECTED as REPLAYED (and alerted), the
    order executed once; re-signed, the same order answers its original outcome."""
    signer = dev_signer(nats_server.creds)
    account, client_order_id = new_id("R"), new_id("ord")
    subject, payload = contract.submit(account), new_order(account, client_order_id)
    headers = signer.headers(subject, payload)
    nc = await orchestrator(nats_server)
    try:
        first = orders_pb2.OrderAck.FromString(
            await ask(nc, subject, payload, headers, new_id("corr"))
        )
        assert first.status == ACCEPTED
        replay_id = new_id("corr")
        copy = orders_pb2.OrderAck.FromString(await ask(nc, subject, payload, headers, replay_id))
        assert (copy.status, copy.reason) == (REJECTED, orders_pb2.REJECT_REASON_REPLAYED)
        assert "was seen" in copy.text, copy.text
        assert signer.public_key in copy.text, copy.text
        _, alert = await wait_for_alert(nats_server, replay_id)
        assert alert.kind == security_pb2.SECURITY_VIOLATION_KIND_REPLAYED
        assert alert.identity == "orchestrator"

        again = orders_pb2.OrderAck.FromString(
            await ask(nc, subject, payload, signer.headers(subject, payload), new_id("corr"))
        )
        assert again.duplicate
        assert again.engine_order_id == first.engine_order_id
        reports = await wait_for_finals(nats_server, account, {client_order_id}, timeout=30)
        assert {r.engine_order_id for r in reports} == {first.engine_order_id}
        assert sum(1 for r in reports if r.exec_type == orders_pb2.EXEC_TYPE_NEW) == 1
    finally:
        await nc.close()


async def test_cancel_and_status_are_checked_too(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """An unsigned cancel is REJECTED (UNSIGNED) and cancels nothing; an unsigned status query
    is answered not found with the reason; both are alerted."""
    account, client_order_id = new_id("C"), new_id("ord")
    nc = await orchestrator(nats_server)
    try:
        cancel_corr, status_corr = new_id("corr"), new_id("corr")
        answer = await ask(
            nc, contract.cancel(account), cancel_request(account, client_order_id), {}, cancel_corr
        )
        ack = orders_pb2.OrderAck.FromString(answer)
        assert (ack.status, ack.reason) == (REJECTED, orders_pb2.REJECT_REASON_UNSIGNED)
        answer = await ask(
            nc, contract.status(account), status_request(account, client_order_id), {}, status_corr
        )
        reply = orders_pb2.OrderStatusReply.FromString(answer)
        assert not reply.found
        assert reply.reason == orders_pb2.REJECT_REASON_UNSIGNED
        assert "unsigned" in reply.text
        for corr, of in ((cancel_corr, contract.cancel), (status_corr, contract.status)):
            _, alert = await wait_for_alert(nats_server, corr)
            assert alert.kind == security_pb2.SECURITY_VIOLATION_KIND_UNSIGNED
            assert alert.subject == of(account)
        # A signed status query of another account's order (payload) on this account's subject.
        signer = dev_signer(nats_server.creds)
        subject = contract.status(account)
        payload = status_request(new_id("ELSE"), client_order_id)
        reply = orders_pb2.OrderStatusReply.FromString(
            await ask(nc, subject, payload, signer.headers(subject, payload), new_id("corr"))
        )
        assert reply.reason == orders_pb2.REJECT_REASON_ACCOUNT_MISMATCH
    finally:
        await nc.close()


async def test_refused_queued_order_is_reported_terminated_and_alerted(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """An unsigned queued order: a REJECTED report (UNSIGNED) under its subject's account, an
    alert, its message terminated (not redelivered); a signed one executes with its signer."""
    signer = dev_signer(nats_server.creds)
    account, bad_id, good_id = new_id("Q"), new_id("bad"), new_id("good")
    subject = contract.queue(account)
    corr = new_id("corr")
    nc = await orchestrator(nats_server)
    try:
        js = nc.jetstream()
        await js.publish(
            subject,
            new_order(account, bad_id),
            headers={contract.HEADER_MSG_ID: bad_id, contract.HEADER_CORRELATION_ID: corr},
        )
        payload = new_order(account, good_id)
        await js.publish(
            subject,
            payload,
            headers=signed(signer, subject, payload, {contract.HEADER_MSG_ID: good_id}),
        )
        reports = await wait_for_finals(nats_server, account, {bad_id, good_id}, timeout=30)
        _, alert = await wait_for_alert(nats_server, corr)
    finally:
        await nc.close()
    refused = [r for r in reports if r.client_order_id == bad_id]
    assert [r.exec_type for r in refused] == [orders_pb2.EXEC_TYPE_REJECTED]
    assert refused[0].reason == orders_pb2.REJECT_REASON_UNSIGNED
    assert refused[0].signer == ""
    assert alert.kind == security_pb2.SECURITY_VIOLATION_KIND_UNSIGNED
    assert (alert.subject, alert.client_order_id) == (subject, bad_id)
    executed = [r for r in reports if r.client_order_id == good_id]
    assert executed
    assert {r.signer for r in executed} == {signer.public_key}
    await wait_for_ack_floor(nats_server)  # both messages settled: nothing left to redeliver


async def test_not_entitled_and_sighup_reload(nats_server: ServerHandle, tmp_path: Path) -> None:
    """A desk entitled to one account is refused another's (NOT_ENTITLED); an identity added
    to the file is refused until SIGHUP, accepted after; an invalid file on SIGHUP keeps the
    entitlements in force. On SIGTERM the engine logs its intake refusal counts."""
    desk, desk_seed = fresh_signer()
    newcomer, newcomer_seed = fresh_signer()
    desk_a, desk_b, new_account = new_id("DA"), new_id("DB"), new_id("NEW")
    file = entitlements_file(
        tmp_path / "entitlements.toml", nats_server, [("desk-fresh", desk.public_key, [desk_a])]
    )
    engine = EngineProcess(
        nats_server,
        log_file=tmp_path / "engine.log",
        env={"BRIDGE_ENTITLEMENTS_FILE": str(file)},
    ).start()
    try:
        nc = await orchestrator(nats_server)
        try:
            refused = await signed_submit(nc, desk, desk_b, new_id("ord"))
            assert (refused.status, refused.reason) == (
                REJECTED,
                orders_pb2.REJECT_REASON_NOT_ENTITLED,
            )
            assert refused.text == (
                f"identity desk-fresh is not entitled to account {desk_b} (entitled: {desk_a})"
            )
            assert await stored_reports(nats_server, desk_b) == []
            own = new_id("ord")
            assert (await signed_submit(nc, desk, desk_a, own)).status == ACCEPTED
            reports = await wait_for_finals(nats_server, desk_a, {own}, timeout=30)
            assert {r.signer for r in reports} == {desk.public_key}

            stranger = await signed_submit(nc, newcomer, new_account, new_id("ord"))
            assert stranger.reason == orders_pb2.REJECT_REASON_BAD_SIGNATURE
            entitlements_file(
                file,
                nats_server,
                [("desk-fresh", desk.public_key, [desk_a]), ("newcomer", newcomer.public_key, ["*"])],
            )
            os.kill(engine.pid or 0, signal.SIGHUP)
            reloaded = await wait_for_log(engine, "entitlements reloaded")
            assert reloaded["added"] == '["newcomer"]'
            assert reloaded["identities"] == reloaded["identities_before"] + 1
            welcome = await signed_submit(nc, newcomer, new_account, new_id("ord"))
            assert welcome.status == ACCEPTED, welcome

            file.write_text("version = 1\n[identities.broken]\nrole = 'trader'\n", "utf-8")
            os.kill(engine.pid or 0, signal.SIGHUP)
            failed = await wait_for_log(
                engine, "entitlements reload failed: keeping the entitlements in force"
            )
            assert failed["level"] == "error"
            assert "identities.broken.role" in failed["error"]
            still = await signed_submit(nc, newcomer, new_account, new_id("ord"))
            assert still.status == ACCEPTED
        finally:
            await nc.close()
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    summary = await wait_for_log(engine, "intake refusals", timeout=1)
    assert summary["not_entitled"] == 1, summary
    assert summary["bad_signature"] == 1, summary
    text = engine.log_file.read_text()
    for seed in (desk_seed, newcomer_seed, nats_server.creds.role("engine").seed_file.read_bytes()):
        assert seed.strip().decode() not in text


async def test_a_burst_of_refusals_never_blocks_valid_orders(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """Refusals (and their alerts) are off the order path: 200 unsigned submits, then a signed
    order is accepted at once."""
    signer = dev_signer(nats_server.creds)
    account = new_id("B")
    nc = await orchestrator(nats_server)
    try:
        subject = contract.submit(account)
        answers = await asyncio.gather(
            *(
                ask(nc, subject, new_order(account, new_id("x")), {}, new_id("corr"))
                for _ in range(200)
            )
        )
        reasons = {orders_pb2.OrderAck.FromString(a).reason for a in answers}
        assert reasons == {orders_pb2.REJECT_REASON_UNSIGNED}
        async with asyncio.timeout(5):
            ack = await signed_submit(nc, signer, account, new_id("ok"))
        assert ack.status == ACCEPTED
    finally:
        await nc.close()
