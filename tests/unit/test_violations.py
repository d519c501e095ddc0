"""What the sentinel's alerts say for each kind of violation (pure)."""

from __future__ import annotations

from bridge import contract
from bridge.security import entitlements as ent
from bridge.security import violations as vi
from bridge.security.server_log import parse_line
from bridge.security.sys_api import Found
from bridge.security.sys_events import AuthErrorEvent, ClientInfo, ConnInfo, PeerCert, ServerInfo
from bridge.v1 import security_pb2 as pb

DESK_A = "U" + "A" * 55
DESK_B = "U" + "B" * 55
STRANGER = "U" + "C" * 55
ENTS = ent.parse(
    {
        "version": 1,
        "identities": {
            "desk-a": {
                "role": "orchestrator",
                "nkey": DESK_A,
                "certificate_subject": "CN=desk-a",
                "accounts": ["DESK-A"],
            },
            "desk-b": {
                "role": "orchestrator",
                "nkey": DESK_B,
                "certificate_subject": "CN=desk-b",
                "accounts": ["DESK-B"],
            },
        },
    }
)
DIRECTORY = vi.Directory(ENTS)
PREFIX = "[1] 2026/11/30 05:53:30.061293 [ERR] 127.0.0.1:47574 - cid:8 - "


def _publish_line(user: str, subject: str) -> str:
    return PREFIX + f'"v2:python3" - "BRIDGE/nkey:{user}" - Publish Violation - Subject "{subject}"'


def _found(user: str = DESK_A, cert: str = "CN=desk-a,O=execution-bridge dev") -> Found:
    conn = ConnInfo(
        cid=8,
        ip="127.0.0.1",
        port=47574,
        authorized_user=user,
        account="BRIDGE",
        tls_peer_certs=(PeerCert(subject=cert),),
    )
    return Found("NSERVER", conn)


def test_wrong_account_names_identity_account_and_entitlement() -> None:
    v = parse_line(_publish_line(DESK_A, contract.submit("DESK-B")))
    assert v is not None
    alert = vi.from_permission(v, _found(), "kicked cid 8", DIRECTORY)
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH
    assert (alert.identity, alert.nkey, alert.account) == ("desk-a", DESK_A, "DESK-B")
    assert alert.subject == contract.submit("DESK-B")
    assert (alert.connection_id, alert.server_id) == (8, "NSERVER")
    assert alert.remote_address == "127.0.0.1:47574"
    assert alert.action == "kicked cid 8"
    assert "not entitled to account DESK-B (entitled: DESK-A)" in alert.reason
    assert "certificate" not in alert.reason  # its own certificate


def test_certificate_of_another_identity_is_named() -> None:
    v = parse_line(_publish_line(DESK_A, contract.executions("DESK-B", "o1")))
    assert v is not None
    alert = vi.from_permission(v, _found(cert="CN=desk-b,O=execution-bridge dev"), "x", DIRECTORY)
    assert "certificate CN=desk-b,O=execution-bridge dev is not identity desk-a's" in alert.reason


def test_forbidden_subject_without_account_or_lookup() -> None:
    line = PREFIX + f'"BRIDGE/nkey:{STRANGER}" - Subscription Violation - Subject "x.y", SID 3'
    v = parse_line(line)
    assert v is not None
    alert = vi.from_permission(v, None, vi.NOT_FOUND, DIRECTORY)
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_SUBSCRIBE
    assert (alert.identity, alert.nkey, alert.account, alert.server_id) == ("", STRANGER, "", "")
    assert alert.reason.startswith(f"{STRANGER} may not subscribe to x.y")
    assert alert.action == vi.NOT_FOUND


def test_tls_refusal() -> None:
    line = (
        PREFIX + "TLS handshake error: tls: failed to verify certificate: x509: certificate "
        "signed by unknown authority (CN=desk-a,O=evil SHA-256: " + "a" * 64 + ")"
    )
    v = parse_line(line)
    assert v is not None
    alert = vi.from_tls(v)
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_UNTRUSTED_CERTIFICATE
    assert alert.connection_id == 8
    assert alert.action == vi.CLOSED_BY_SERVER_TLS
    assert "presented CN=desk-a,O=evil" in alert.reason
    assert alert.identity == ""  # an unverified certificate names nobody


def test_auth_error() -> None:
    event = AuthErrorEvent(
        server=ServerInfo(id="NSERVER", name="n"),
        client=ClientInfo(id=9, host="127.0.0.1", user=STRANGER, name="intruder"),
        reason="Authentication Failure",
    )
    alert = vi.from_auth_error(event, DIRECTORY)
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_AUTHENTICATION_FAILED
    assert (alert.nkey, alert.identity, alert.connection_id) == (STRANGER, "", 9)
    assert (alert.server_id, alert.remote_address) == ("NSERVER", "127.0.0.1")
    assert "is in no identity of the entitlements" in alert.reason
    assert "Authentication Failure" in alert.reason
    assert "intruder" in alert.reason
    assert alert.action == vi.CLOSED_BY_SERVER_AUTH


def test_engine_refusal_kicked_and_not() -> None:
    refusal = pb.SecurityAlert(
        alert_id="eng-1",
        kind=pb.SECURITY_VIOLATION_KIND_BAD_SIGNATURE,
        source="engine",
        nkey=DESK_A,
        account="DESK-A",
        subject=contract.submit("DESK-A"),
        reason="signature does not verify",
        engine_id="engine-1",
        client_order_id="o1",
        correlation_id="c1",
        action="refused",
    )
    second = Found("NSERVER", ConnInfo(cid=14, ip="127.0.0.1", port=2, authorized_user=DESK_A))
    alert = vi.from_engine(refusal, [(_found(), None), (second, "no such client")], DIRECTORY)
    assert alert.source == "sentinel"
    assert alert.kind == refusal.kind
    assert alert.caused_by == "eng-1"
    assert alert.alert_id != "eng-1"
    assert (alert.identity, alert.nkey, alert.account) == ("desk-a", DESK_A, "DESK-A")
    assert (alert.connection_id, alert.server_id) == (8, "NSERVER")
    assert alert.action == "kicked cid 8; kick of cid 14 failed: no such client"
    assert (alert.engine_id, alert.client_order_id, alert.correlation_id) == (
        "engine-1",
        "o1",
        "c1",
    )
    assert alert.reason == "engine engine-1 refused: signature does not verify"
    none = vi.from_engine(refusal, [], DIRECTORY)
    assert none.action == f"no open connection of {DESK_A}"
    assert none.connection_id == 0
    unsigned = pb.SecurityAlert(kind=pb.SECURITY_VIOLATION_KIND_UNSIGNED, source="engine")
    assert vi.from_engine(unsigned, [], DIRECTORY).action.startswith("no signer named")


def test_directory_without_entitlements() -> None:
    assert vi.Directory().name_of(DESK_A) == ""
    assert DIRECTORY.name_of(DESK_B) == "desk-b"
    assert DIRECTORY.name_of("") == ""
