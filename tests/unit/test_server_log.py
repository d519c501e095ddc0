"""The nats-server log parser, held to lines the pinned nats-server (2.15.1) wrote.

The lines below were captured from ``.venv/bin/nats-server`` running ``nats/server.conf``: a
client without a certificate, one with a foreign CA's, an unknown NKey, and a connected
orchestrator publishing and subscribing where it may not (tests/integration/test_sentinel.py
checks the same against a live server).
"""

from __future__ import annotations

import pytest

from bridge.security.server_log import parse_line, tls_kind
from bridge.v1 import security_pb2 as pb

NKEY = "UCMUFYK3IOZCTUZT755SKKGTUEESKSHQU7MC4PJPML7A4UGVQFE3ILIJ"
CLIENT = f'127.0.0.1:47574 - cid:8 - "v2.16.0:python3:capture-client" - "$G/nkey:{NKEY}"'
FP = "7c19e159d2c416c9a6e3c9733c1bec86e44b901a31eff1e592e28bbbf0883e89"
PREFIX = "[26909] 2026/11/30 05:53:30.061293 [ERR] "

NO_CERT = (
    "[26909] 2026/11/30 05:53:29.879766 [ERR] 127.0.0.1:47546 - cid:5 - "
    "TLS handshake error: tls: client didn't provide a certificate"
)
FOREIGN = (
    "[26909] 2026/11/30 05:53:29.987456 [ERR] 127.0.0.1:47548 - cid:6 - TLS handshake error: "
    "tls: failed to verify certificate: x509: certificate signed by unknown authority "
    f"(CN=orchestrator,O=execution-bridge dev SHA-256: {FP})"
)
UNKNOWN_NKEY = (
    "[26909] 2026/11/30 05:53:30.035474 [ERR] 127.0.0.1:47558 - cid:7 - authentication error "
    '- Nkey "UBWZRCTBCRM5QMNPHX6PIAI6QDQIKCFVPRYGEK6KSECQXO2TNNYMR4OK"'
)
PUBLISH = PREFIX + CLIENT + ' - Publish Violation - Subject "bridge.v1.exec.A.x"'
SUBSCRIBE = PREFIX + CLIENT + ' - Subscription Violation - Subject "bridge.v1.engine.foo", SID 1'
SUBSCRIBE_QUEUE = (
    PREFIX + CLIENT + ' - Subscription Violation - Subject "bridge.v1.engine.bar", '
    'Queue: "qq", SID 2'
)


def test_no_client_certificate() -> None:
    v = parse_line(NO_CERT)
    assert v is not None
    assert v.kind == pb.SECURITY_VIOLATION_KIND_NO_CLIENT_CERTIFICATE
    assert (v.cid, v.remote_address, v.host, v.port) == (5, "127.0.0.1:47546", "127.0.0.1", 47546)
    assert v.detail == "tls: client didn't provide a certificate"
    assert v.user == v.server_account == v.subject == ""
    assert v.logged_at == "2026/11/30 05:53:29.879766"


def test_foreign_ca_names_the_claimed_subject() -> None:
    v = parse_line(FOREIGN)
    assert v is not None
    assert v.kind == pb.SECURITY_VIOLATION_KIND_UNTRUSTED_CERTIFICATE
    assert v.cid == 6
    assert v.certificates == ("CN=orchestrator,O=execution-bridge dev",)
    assert "unknown authority" in v.detail


def test_unknown_nkey() -> None:
    v = parse_line(UNKNOWN_NKEY)
    assert v is not None
    assert v.kind == pb.SECURITY_VIOLATION_KIND_AUTHENTICATION_FAILED
    assert v.user == "UBWZRCTBCRM5QMNPHX6PIAI6QDQIKCFVPRYGEK6KSECQXO2TNNYMR4OK"
    assert v.cid == 7


def test_forbidden_publish_carries_the_authenticated_user() -> None:
    v = parse_line(PUBLISH)
    assert v is not None
    assert v.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH
    assert (v.cid, v.subject, v.user, v.server_account) == (8, "bridge.v1.exec.A.x", NKEY, "$G")
    assert v.client_name == "v2.16.0:python3:capture-client"
    assert v.remote_address == "127.0.0.1:47574"


def test_forbidden_reply_subject_is_a_forbidden_publish() -> None:
    v = parse_line(PREFIX + CLIENT + ' - Publish Violation - Reply "_INBOX.other.x"')
    assert v is not None
    assert v.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH
    assert v.subject == "_INBOX.other.x"


@pytest.mark.parametrize(
    ("line", "subject", "queue"),
    [(SUBSCRIBE, "bridge.v1.engine.foo", ""), (SUBSCRIBE_QUEUE, "bridge.v1.engine.bar", "qq")],
)
def test_forbidden_subscribe(line: str, subject: str, queue: str) -> None:
    v = parse_line(line)
    assert v is not None
    assert v.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_SUBSCRIBE
    assert (v.subject, v.queue, v.user, v.cid) == (subject, queue, NKEY, 8)


def test_too_many_tokens_is_a_forbidden_subscribe() -> None:
    line = PREFIX + CLIENT + ' - Subscription Violation Too Many Tokens - Subject "a.b.c", SID 9'
    v = parse_line(line)
    assert v is not None
    assert v.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_SUBSCRIBE
    assert v.subject == "a.b.c"


def test_accounts_label_alone_ipv6_and_no_time_prefix() -> None:
    line = f'[ERR] [::1]:5000 - cid:12 - "BRIDGE/nkey:{NKEY}" - Publish Violation - Subject "x"'
    v = parse_line(line)
    assert v is not None
    assert (v.host, v.port, v.remote_address) == ("::1", 5000, "[::1]:5000")
    assert (v.server_account, v.user, v.client_name, v.logged_at) == ("BRIDGE", NKEY, "", "")


def test_client_name_with_quotes_is_unescaped() -> None:
    line = PREFIX + '1.2.3.4:5 - cid:3 - "v1:go:my \\"app\\"" - Publish Violation - Subject "x"'
    v = parse_line(line)
    assert v is not None
    assert v.client_name == 'v1:go:my "app"'
    assert v.user == ""


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "[26909] 2026/11/30 05:53:29.806744 [INF] Server is ready",
        # Same text at another level: only errors are violations.
        PUBLISH.replace("[ERR]", "[DBG]"),
        # Routes and leaf nodes are not clients.
        PREFIX + '10.0.0.1:6222 - rid:3 - Publish Violation - Subject "x"',
        # A TLS error that is not about the certificate (client hung up, wrong version).
        PREFIX + "127.0.0.1:1 - cid:4 - TLS handshake error: EOF",
        PREFIX + "127.0.0.1:1 - cid:4 - TLS handshake error: tls: client offered only "
        "unsupported versions: [303]",
        PREFIX + "127.0.0.1:1 - cid:4 - Slow Consumer Detected",
        PREFIX + "127.0.0.1:1 - cid:x - Publish Violation",
        "x" * 100_000,
    ],
)
def test_other_lines_are_not_violations(line: str) -> None:
    assert parse_line(line) is None


def test_tls_kind() -> None:
    assert tls_kind("remote error: tls: bad certificate") == (
        pb.SECURITY_VIOLATION_KIND_UNTRUSTED_CERTIFICATE
    )
    assert tls_kind("x509: certificate has expired or is not yet valid") == (
        pb.SECURITY_VIOLATION_KIND_UNTRUSTED_CERTIFICATE
    )
    assert tls_kind("i/o timeout") is None
