"""nats-server log lines that are security violations (pure: one line in, one event or None out).

The sentinel follows the server's log for what the server reports only there (nats-server 2.15,
``server/client.go``):

* ``pubPermissionViolation``: ``Publish Violation - Subject "<subject>"``; a forbidden reply
  subject: ``Publish Violation - Reply "<reply>"``;
* ``subPermissionViolation``: ``Subscription Violation - Subject "<subject>", SID <sid>`` or
  ``..., Queue: "<queue>", SID <sid>``; ``maxTokensViolation``: ``Subscription Violation Too Many
  Tokens - Subject "<subject>", SID <sid>``;
* ``tlsHandshake``: ``TLS handshake error: <Go error>[ (<subject> SHA-256: <hex>; ...)]``, e.g.
  ``tls: client didn't provide a certificate`` or ``tls: failed to verify certificate: x509:
  certificate signed by unknown authority (CN=x,O=y SHA-256: ...)``;
* ``authViolation``: ``authentication error - Nkey "<U...>"`` (the sentinel takes these from the
  server's advisory instead, which says more).

Each is an ``[ERR]`` line whose text starts with the client's connection prefix (``initClient``)
``<ip>:<port> - cid:<n>``, to which the server adds, once the client's CONNECT is processed,
`` - "<version>:<lang>:<name>"`` and `` - "<account>/nkey:<U...>"`` (both Go ``%q`` strings).
Before them comes the logger's own prefix: ``[<pid>] <date> <time> [ERR] `` (pid and time are
optional in nats-server's logger, so they are optional here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.v1 import security_pb2 as pb

_PREFIX = re.compile(
    r"^(?:\[\d+\] )?"  # [pid]
    r"(?:(?P<date>\d{4}/\d\d/\d\d) (?P<time>\d\d:\d\d:\d\d(?:\.\d+)?) )?"
    r"\[(?P<level>[A-Z]{3})\] "
    r"(?P<addr>\S+):(?P<port>\d{1,5}) - cid:(?P<cid>\d+)"
    r"(?P<rest>.*)$"
)
# A Go %q string: quotes around anything without an unescaped quote.
_QUOTED = re.compile(r' - "((?:[^"\\]|\\.)*)"')
_AUTH_LABEL = re.compile(r"^(?P<account>[^/]+)/(?P<kind>nkey|user|jwt):(?P<user>.+)$")
_PUBLISH = re.compile(
    r'^Publish Violation - (?P<what>Subject|Reply) "(?P<subject>(?:[^"\\]|\\.)*)"'
)
_SUBSCRIBE = re.compile(
    r"^Subscription Violation(?P<tokens> Too Many Tokens)? - "
    r'Subject "(?P<subject>(?:[^"\\]|\\.)*)"'
    r'(?:, Queue: "(?P<queue>(?:[^"\\]|\\.)*)")?, SID (?P<sid>\S+)'
)
_TLS = re.compile(r"^TLS handshake error: (?P<error>.*)$")
_TLS_CERTS = re.compile(
    r" \((?P<certs>[^()]* SHA-256: [0-9a-f]{64}(?:; [^()]* SHA-256: [0-9a-f]{64})*)\)$"
)
_AUTH = re.compile(r'^authentication error(?: - (?P<what>\w+) "(?P<user>[^"]*)")?')

_NO_CERTIFICATE = ("didn't provide a certificate", "client didn't provide a certificate")
_UNTRUSTED = (
    "failed to verify certificate",
    "x509:",
    "bad certificate",
    "unknown certificate",
    "certificate required",
    "certificate not pinned",
)


@dataclass(frozen=True)
class LogViolation:
    """One violation the server logged, with what the line says about the connection.

    ``kind`` is a ``SecurityViolationKind``; ``user`` the authenticated public NKey (or user
    name) and ``account`` the server account, when the server had them in its prefix;
    ``certificates`` the subjects of the certificates a TLS handshake refused (unverified: what
    the client claimed)."""

    kind: pb.SecurityViolationKind.ValueType
    cid: int
    remote_address: str
    host: str
    port: int
    detail: str
    subject: str = ""
    queue: str = ""
    user: str = ""
    server_account: str = ""
    client_name: str = ""
    logged_at: str = ""
    certificates: tuple[str, ...] = ()


def _unquote(text: str) -> str:
    """Undo Go's %q for the characters a subject or name can hold."""
    if "\\" not in text:
        return text
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), text)


def _host(addr: str) -> str:
    return addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr


def tls_kind(error: str) -> pb.SecurityViolationKind.ValueType | None:
    """The violation a TLS handshake error is, or None if it is not about the client's
    certificate (a wrong protocol version, a client that hung up, a timeout)."""
    lowered = error.lower()
    if any(marker in lowered for marker in _NO_CERTIFICATE):
        return pb.SECURITY_VIOLATION_KIND_NO_CLIENT_CERTIFICATE
    if any(marker in lowered for marker in _UNTRUSTED):
        return pb.SECURITY_VIOLATION_KIND_UNTRUSTED_CERTIFICATE
    return None


@dataclass(frozen=True)
class _Connection:
    """What the connection prefix of a line says."""

    cid: int
    addr: str
    port: int
    user: str
    server_account: str
    client_name: str
    logged_at: str

    def violation(
        self,
        kind: pb.SecurityViolationKind.ValueType,
        detail: str,
        *,
        subject: str = "",
        queue: str = "",
        user: str = "",
        certificates: tuple[str, ...] = (),
    ) -> LogViolation:
        return LogViolation(
            kind=kind,
            cid=self.cid,
            remote_address=f"{self.addr}:{self.port}",
            host=_host(self.addr),
            port=self.port,
            detail=detail,
            subject=subject,
            queue=queue,
            user=user or self.user,
            server_account=self.server_account,
            client_name=self.client_name,
            logged_at=self.logged_at,
            certificates=certificates,
        )


def _connection(line: str) -> tuple[_Connection, str] | None:
    """The connection prefix of an ``[ERR]`` client line and the message after it."""
    m = _PREFIX.match(line.rstrip("\r\n"))
    if m is None or m["level"] != "ERR":
        return None
    rest = m["rest"]
    # The optional quoted client info and auth label, then " - <message>".
    quoted: list[str] = []
    while (q := _QUOTED.match(rest)) is not None:
        quoted.append(_unquote(q[1]))
        rest = rest[q.end() :]
    if not rest.startswith(" - "):
        return None
    user = account = name = ""
    for index, text in enumerate(quoted):
        label = _AUTH_LABEL.match(text)
        if label is not None and index == len(quoted) - 1:
            account, user = label["account"], label["user"]
        else:
            name = text
    conn = _Connection(
        cid=int(m["cid"]),
        addr=m["addr"],
        port=int(m["port"]),
        user=user,
        server_account=account,
        client_name=name,
        logged_at=f"{m['date']} {m['time']}" if m["date"] else "",
    )
    return conn, rest[3:]


def parse_line(line: str) -> LogViolation | None:
    """The violation on one log line, or None for any other line (including malformed ones)."""
    parsed = _connection(line)
    if parsed is None:
        return None
    conn, message = parsed
    if (p := _PUBLISH.match(message)) is not None:
        return conn.violation(
            pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH, message, subject=_unquote(p["subject"])
        )
    if (s := _SUBSCRIBE.match(message)) is not None:
        return conn.violation(
            pb.SECURITY_VIOLATION_KIND_FORBIDDEN_SUBSCRIBE,
            message,
            subject=_unquote(s["subject"]),
            queue=_unquote(s["queue"] or ""),
        )
    if (t := _TLS.match(message)) is not None:
        error = t["error"]
        kind = tls_kind(error)
        if kind is None:
            return None
        certs: tuple[str, ...] = ()
        if (c := _TLS_CERTS.search(error)) is not None:
            certs = tuple(part.rsplit(" SHA-256: ", 1)[0] for part in c["certs"].split("; "))
        return conn.violation(kind, error, certificates=certs)
    if (a := _AUTH.match(message)) is not None:
        return conn.violation(
            pb.SECURITY_VIOLATION_KIND_AUTHENTICATION_FAILED, message, user=a["user"] or ""
        )
    return None
