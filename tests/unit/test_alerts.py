"""SecurityAlert building and the Alertmanager webhook body (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge import contract
from bridge.security import alertmanager as am
from bridge.security import alerts
from bridge.v1 import security_pb2 as pb

NKEY = "UCMUFYK3IOZCTUZT755SKKGTUEESKSHQU7MC4PJPML7A4UGVQFE3ILIJ"


def _alert(**fields: object) -> pb.SecurityAlert:
    base: dict[str, Any] = {
        "identity": "desk-a",
        "nkey": NKEY,
        "subject": contract.submit("DESK-B"),
        "account": "DESK-B",
        "reason": "desk-a may not publish",
        "connection_id": 12,
        "server_id": "NSERVER",
        "remote_address": "127.0.0.1:5555",
        "action": "kicked cid 12",
    }
    base.update(fields)
    alert_id = str(base.pop("alert_id", "a1"))
    return alerts.new_alert(
        pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH,
        now_ns=1_767_312_245_123_456_789,
        alert_id=alert_id,
        **base,
    )


@pytest.mark.parametrize("kind", list(pb.SecurityViolationKind.values()))
def test_kind_tokens_round_trip(kind: pb.SecurityViolationKind.ValueType) -> None:
    token = alerts.kind_token(kind)
    assert token == token.lower()
    assert not token.startswith("security_violation_kind")
    assert alerts.kind_from_token(token) == kind


def test_subject_is_the_contracts() -> None:
    alert = _alert()
    assert alerts.subject_of(alert) == contract.alert("sentinel", "forbidden_publish")
    assert alerts.kind_token(pb.SECURITY_VIOLATION_KIND_BAD_SIGNATURE) == "bad_signature"


def test_new_alert_fills_id_time_and_source() -> None:
    a = alerts.new_alert(pb.SECURITY_VIOLATION_KIND_REPLAYED)
    b = alerts.new_alert(pb.SECURITY_VIOLATION_KIND_REPLAYED)
    assert a.alert_id
    assert a.alert_id != b.alert_id
    assert a.source == "sentinel"
    assert a.time_unix_ns > 0


@pytest.mark.parametrize(
    ("subject", "account"),
    [
        (contract.submit("DESK-B"), "DESK-B"),
        (contract.cancel("A"), "A"),
        (contract.status("A"), "A"),
        (contract.queue("A"), "A"),
        (contract.executions("A", "o1"), "A"),
        (contract.engine_cancel("e1"), ""),
        ("_INBOX.x.y", ""),
    ],
)
def test_order_account(subject: str, account: str) -> None:
    assert alerts.order_account(subject) == account


def test_describe_and_log_fields() -> None:
    alert = _alert()
    text = alerts.describe(alert)
    assert "forbidden publish by desk-a" in text
    assert "cid 12" in text
    assert "kicked cid 12" in text
    assert "DESK-B" in text
    fields = alerts.log_fields(alert)
    assert fields["public_key"] == NKEY
    assert "nkey" not in fields  # the log's redaction would mask a key named like that
    assert "engine_id" not in fields  # empty fields are left out


def test_alertmanager_fingerprint_matches_prometheus() -> None:
    # prometheus/common model: labelSetToFingerprint test vectors.
    assert am.fingerprint({}) == f"{14695981039346656037:016x}"
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert am.fingerprint(labels) == f"{5799056148416392346:016x}"


def test_webhook_payload_is_alertmanagers_format() -> None:
    first = _alert()
    second = _alert(alert_id="a2", account="", identity="")
    body = json.loads(am.payload([first, second], "bridge-sentinel").to_json())
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "bridge-sentinel"
    assert body["groupLabels"] == {"alertname": "BridgeSecurityViolation"}
    assert body["truncatedAlerts"] == 0
    assert set(body) >= {"groupKey", "commonLabels", "commonAnnotations", "externalURL"}
    assert body["commonLabels"] == {
        "alertname": "BridgeSecurityViolation",
        "kind": "forbidden_publish",
        "severity": "critical",
        "source": "sentinel",
    }
    one = body["alerts"][0]
    assert one["status"] == "firing"
    assert one["labels"] == {
        "alertname": "BridgeSecurityViolation",
        "kind": "forbidden_publish",
        "identity": "desk-a",
        "account": "DESK-B",
        "severity": "critical",
        "source": "sentinel",
        "alert_id": "a1",
    }
    assert one["startsAt"] == "2026-01-02T00:04:05.123457Z"
    assert one["endsAt"] == "0001-01-01T00:00:00Z"
    assert one["fingerprint"] == am.fingerprint(one["labels"])
    assert "kicked cid 12" in one["annotations"]["summary"]
    assert "cid: 12" in one["annotations"]["description"]
    two = body["alerts"][1]
    assert two["labels"]["identity"] == "unknown"
    assert "account" not in two["labels"]
    assert two["fingerprint"] != one["fingerprint"]


def test_webhook_payload_needs_an_alert() -> None:
    with pytest.raises(ValueError, match="at least one"):
        am.payload([], "r")
