"""nats-server's system messages, held to replies the pinned nats-server (2.15.1) sent.

``data/nats_sys_messages.json`` was captured from ``.venv/bin/nats-server`` with a BRIDGE and a
SYS account: an authentication-failure advisory (an NKey no user has), connz replies (one open
connection by user; none; one closed after a kick) and kick replies (done; no such client).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.security import sys_events as ev

DATA: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "nats_sys_messages.json").read_text("utf-8")
)


def _raw(name: str) -> bytes:
    return json.dumps(DATA[name]).encode()


def test_auth_error_advisory() -> None:
    event = ev.parse_auth_error(_raw("ADVISORY"))
    assert event.reason == "Authentication Failure"
    assert event.client.user.startswith("U")
    assert len(event.client.user) == 56
    assert event.client.name == "intruder"
    assert event.client.host == "127.0.0.1"
    assert event.client.id > 0
    assert event.client.account == "$G"
    assert event.server.id.startswith("N")
    assert event.time.endswith("Z")


def test_connz_open_connection_with_auth_details() -> None:
    reply = ev.parse_reply(_raw("CONNZ"))
    assert reply.error is None
    (conn,) = ev.connections(reply)
    assert reply.server.id == DATA["CONNZ"]["server"]["id"]
    assert conn.authorized_user.startswith("U")
    assert conn.account == "BRIDGE"
    assert conn.certificate_subject == "CN=orchestrator,O=execution-bridge dev"
    assert conn.remote_address == f"127.0.0.1:{conn.port}"
    assert not conn.closed


def test_connz_closed_connection() -> None:
    (conn,) = ev.connections(ev.parse_reply(_raw("CONNZ_CLOSED")))
    assert conn.closed
    assert conn.reason == "Kicked"
    assert conn.certificate_subject == ""  # the server keeps no certificate of a closed one


def test_connz_none_and_errors() -> None:
    assert ev.connections(ev.parse_reply(_raw("CONNZ_NONE"))) == ()
    kick = ev.parse_reply(_raw("KICK"))
    assert kick.error is None
    missing = ev.parse_reply(_raw("KICK_MISSING"))
    assert missing.error is not None
    assert missing.error.description == "no such client or leafnode id"
    assert ev.connections(missing) == ()


def test_ipv6_address() -> None:
    conn = ev.ConnInfo(cid=1, ip="::1", port=4)
    assert conn.remote_address == "[::1]:4"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b'{"client": {"id": "x"}}', b"\xff"])
def test_unreadable_advisory(raw: bytes) -> None:
    with pytest.raises(ev.SysMessageError):
        ev.parse_auth_error(raw)


def test_unreadable_connz() -> None:
    with pytest.raises(ev.SysMessageError):
        ev.connections(ev.parse_reply(b'{"data": {"connections": [{"ip": "x"}]}}'))


def test_request_bodies() -> None:
    assert json.loads(ev.connz_request(cid=7, state=ev.CONN_STATE_ALL)) == {
        "auth": True,
        "state": 2,
        "cid": 7,
    }
    assert json.loads(ev.connz_request(user="UX")) == {"auth": True, "state": 0, "user": "UX"}
    assert json.loads(ev.kick_request(12)) == {"cid": 12}
