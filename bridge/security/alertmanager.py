"""Alertmanager's webhook format for security alerts (pure).

The body Alertmanager POSTs to a ``webhook_config`` receiver
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config), version "4", so any
receiver that takes Alertmanager's webhooks takes the sentinel's. Each violation is one alert
with the labels ``alertname=BridgeSecurityViolation``, ``kind``, ``identity``, ``account``,
``severity=critical``, ``source`` and ``alert_id`` (each violation is its own alert, so a
receiver that deduplicates by labels keeps them apart), the annotations ``summary`` and
``description``, ``startsAt`` (RFC 3339) and the ``fingerprint`` Alertmanager would compute for
those labels (FNV-1a 64 over the sorted label names and values, ``prometheus/common/model``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from bridge.security import alerts
from bridge.v1 import security_pb2 as pb

ALERT_NAME = "BridgeSecurityViolation"
SEVERITY = "critical"
WEBHOOK_VERSION = "4"
FIRING = "firing"
ZERO_TIME = "0001-01-01T00:00:00Z"
"""``endsAt`` of a firing alert, as Alertmanager sends it."""

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF
_MASK = (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: 16 hex digits of FNV-1a 64 over each label
    name and value (sorted by name), each followed by the byte 0xff."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def rfc3339(unix_ns: int) -> str:
    """A Unix time in ns as RFC 3339 UTC with microseconds (``2026-01-02T03:04:05.123456Z``)."""
    moment = dt.datetime.fromtimestamp(unix_ns / 1e9, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class WebhookAlert(_Model):
    """One alert of a webhook body."""

    status: str = FIRING
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str = Field(alias="startsAt")
    ends_at: str = Field(default=ZERO_TIME, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str


class WebhookPayload(_Model):
    """The body of one webhook POST."""

    version: str = WEBHOOK_VERSION
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    status: str = FIRING
    receiver: str
    group_labels: dict[str, str] = Field(alias="groupLabels")
    common_labels: dict[str, str] = Field(alias="commonLabels")
    common_annotations: dict[str, str] = Field(alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: tuple[WebhookAlert, ...]

    def to_json(self) -> bytes:
        """The JSON body, with Alertmanager's field names."""
        return self.model_dump_json(by_alias=True).encode()


def labels_of(alert: pb.SecurityAlert) -> dict[str, str]:
    """The alert's labels; an unknown value (empty) is left out, as Prometheus treats an empty
    label as an absent one (so ``account`` is there only when a trading account is involved)."""
    labels = {
        "alertname": ALERT_NAME,
        "kind": alerts.kind_token(alert.kind),
        "identity": alert.identity or "unknown",
        "account": alert.account,
        "severity": SEVERITY,
        "source": alert.source,
        "alert_id": alert.alert_id,
    }
    return {k: v for k, v in labels.items() if v}


def description(alert: pb.SecurityAlert) -> str:
    """Every detail of the alert, one ``name: value`` per line."""
    return "\n".join(f"{k}: {v}" for k, v in alerts.log_fields(alert).items())


def webhook_alert(alert: pb.SecurityAlert) -> WebhookAlert:
    labels = labels_of(alert)
    return WebhookAlert(
        labels=labels,
        annotations={"summary": alerts.describe(alert), "description": description(alert)},
        starts_at=rfc3339(alert.time_unix_ns),
        fingerprint=fingerprint(labels),
    )


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    first, *rest = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def payload(batch: Sequence[pb.SecurityAlert], receiver: str) -> WebhookPayload:
    """The webhook body for a non-empty batch of alerts (grouped by ``alertname``)."""
    if not batch:
        raise ValueError("a webhook payload needs at least one alert")
    items = tuple(webhook_alert(a) for a in batch)
    group_labels = {"alertname": ALERT_NAME}
    return WebhookPayload(
        group_key=f'{{}}:{{alertname="{ALERT_NAME}"}}',
        receiver=receiver,
        group_labels=group_labels,
        common_labels=_common([i.labels for i in items]),
        common_annotations=_common([i.annotations for i in items]),
        alerts=items,
    )
