"""What the sentinel says about each violation it detects (pure: events in, alerts out).

One function per source: a TLS refusal or a permissions violation from the server's log, an
authentication-failure advisory, an engine's refusal. Each names the identity from the
entitlements (by public NKey), the connection (server id, cid, client address) and what was
done about it (``action``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.security import alerts
from bridge.security.entitlements import Entitlements, Identity
from bridge.security.server_log import LogViolation
from bridge.security.sys_api import Found
from bridge.security.sys_events import AuthErrorEvent
from bridge.v1 import security_pb2 as pb

CLOSED_BY_SERVER_TLS = "connection closed by server (TLS handshake refused)"
CLOSED_BY_SERVER_AUTH = "connection closed by server (authentication refused)"
NOT_FOUND = "connection not found (already gone)"


@dataclass(frozen=True)
class Directory:
    """Who is who: the entitlements, if the sentinel was given them."""

    entitlements: Entitlements | None = None

    def identity(self, nkey: str) -> Identity | None:
        if self.entitlements is None or not nkey:
            return None
        return self.entitlements.by_nkey(nkey)

    def name_of(self, nkey: str) -> str:
        """The identity's name, or "" if the key is nobody's (or unknown)."""
        identity = self.identity(nkey)
        return identity.name if identity is not None else ""


def kick_action(results: Sequence[tuple[Found, str | None]]) -> str:
    """``kicked cid 12`` / ``kicked cid 12, 14`` / what failed, from (connection, error) pairs."""
    done = [f.conn.cid for f, error in results if error is None]
    failed = [f"kick of cid {f.conn.cid} failed: {error}" for f, error in results if error]
    parts = []
    if done:
        parts.append("kicked cid " + ", ".join(str(c) for c in done))
    return "; ".join(parts + failed)


def from_tls(v: LogViolation, server_id: str = "") -> pb.SecurityAlert:
    """A client refused in the TLS handshake (no certificate, or one not from our CA)."""
    reason = f"TLS handshake refused: {v.detail}"
    if v.certificates:
        reason += "; presented " + "; ".join(v.certificates)
    return alerts.new_alert(
        v.kind,
        reason=reason,
        connection_id=v.cid,
        server_id=server_id,
        remote_address=v.remote_address,
        action=CLOSED_BY_SERVER_TLS,
    )


def from_auth_error(event: AuthErrorEvent, directory: Directory) -> pb.SecurityAlert:
    """A client whose credentials the server refused (e.g. an NKey nobody is entitled with)."""
    nkey = event.client.user
    identity = directory.identity(nkey)
    if not nkey:
        who = "no NKey presented"
    elif identity is None:
        who = f"NKey {nkey} is in no identity of the entitlements"
    else:
        who = f"NKey {nkey} is identity {identity.name}'s, refused nonetheless"
    reason = f"authentication refused by the server ({event.reason or 'no reason given'}): {who}"
    if event.client.name:
        reason += f"; client name {event.client.name!r}"
    return alerts.new_alert(
        pb.SECURITY_VIOLATION_KIND_AUTHENTICATION_FAILED,
        identity=identity.name if identity else "",
        nkey=nkey,
        reason=reason,
        connection_id=event.client.id,
        server_id=event.server.id,
        remote_address=event.client.host,
        action=CLOSED_BY_SERVER_AUTH,
    )


def permission_reason(v: LogViolation, identity: Identity | None, account: str) -> str:
    """Why the server refused: the operation, the subject, and the identity's entitlement."""
    operation = (
        "publish to" if v.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH else ("subscribe to")
    )
    who = identity.name if identity is not None else (v.user or "an unknown user")
    text = f"{who} may not {operation} {v.subject}"
    if v.queue:
        text += f" (queue {v.queue})"
    if account and identity is not None:
        entitled = ", ".join(identity.accounts) or "none"
        if not identity.entitled(account):
            text += f": not entitled to account {account} (entitled: {entitled})"
    return f"{text}; server said: {v.detail}"


def certificate_mismatch(found: Found | None, identity: Identity | None) -> str:
    """A note if the connection's certificate is not the one its NKey's identity declares."""
    if found is None or identity is None:
        return ""
    subject = found.conn.certificate_subject
    if not subject:
        return ""
    declared = identity.certificate_subject
    if _rdns(subject) >= _rdns(declared):
        return ""
    return f"; certificate {subject} is not identity {identity.name}'s ({declared})"


def _rdns(subject: str) -> set[str]:
    """The attribute=value parts of an RFC 4514 subject (order-insensitive comparison)."""
    return {part.strip() for part in subject.split(",") if part.strip()}


def from_permission(
    v: LogViolation, found: Found | None, action: str, directory: Directory
) -> pb.SecurityAlert:
    """A forbidden publish or subscribe: the server refused it, the sentinel acted on it."""
    nkey = v.user if v.user.startswith("U") else ""
    if found is not None and found.conn.authorized_user:
        nkey = found.conn.authorized_user
    identity = directory.identity(nkey)
    account = alerts.order_account(v.subject)
    reason = permission_reason(v, identity, account) + certificate_mismatch(found, identity)
    return alerts.new_alert(
        v.kind,
        identity=identity.name if identity else "",
        nkey=nkey,
        subject=v.subject,
        account=account,
        reason=reason,
        connection_id=v.cid,
        server_id=found.server_id if found else "",
        remote_address=v.remote_address,
        action=action,
    )


def from_engine(
    refusal: pb.SecurityAlert, results: Sequence[tuple[Found, str | None]], directory: Directory
) -> pb.SecurityAlert:
    """The sentinel's alert about an engine's refusal: the same facts, plus what it did to the
    signer's connections (the refusal's id in ``caused_by``)."""
    if not refusal.nkey:
        action = "no signer named: no connection to kick"
    elif not results:
        action = f"no open connection of {refusal.nkey}"
    else:
        action = kick_action(results)
    first = results[0][0] if results else None
    identity = refusal.identity or directory.name_of(refusal.nkey)
    return alerts.new_alert(
        refusal.kind,
        identity=identity,
        nkey=refusal.nkey,
        subject=refusal.subject,
        account=refusal.account,
        reason=f"engine {refusal.engine_id or '?'} refused: {refusal.reason}",
        connection_id=first.conn.cid if first else 0,
        server_id=first.server_id if first else "",
        remote_address=first.conn.remote_address if first else "",
        action=action,
        engine_id=refusal.engine_id,
        client_order_id=refusal.client_order_id,
        correlation_id=refusal.correlation_id,
        caused_by=refusal.alert_id,
    )
