"""The server's accounts and per-user permissions, rendered from the entitlements (pure, no I/O).

``nats/server.conf`` holds everything but the users; this module turns a concrete (resolved)
:class:`~bridge.security.entitlements.Entitlements` into the nats-server ``accounts`` block the
runtime configuration includes (``accounts.conf``):

* account ``BRIDGE`` (JetStream enabled): every identity but the system ones, each an NKey user
  with the permissions of its role; an orchestrator may publish order operations and read
  execution reports only for its own accounts, and subscribe only to its own inbox;
* account ``SYS`` (``system_account``): the sentinel's system identity, with just the rights
  it needs (authentication advisories, connection listing, kicking a connection), and the
  operators' ``sysadmin`` identity, with just what runbooks/cluster.md's ``nats server ...``
  commands need (``server ls``, ``server report jetstream``, ``server raft peer-remove``).

Every subject comes from :mod:`bridge.contract` (JetStream's and nats-server's own API names are
built here from their fixed prefixes and our stream/consumer names). The output is
deterministic: users sorted by name, accounts sorted, one header line per identity.
``bridge-entitlements`` (:mod:`bridge.security.entitlements_cli`) writes it and reloads the
server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bridge import contract
from bridge.security.entitlements import (
    DEV_KEY_PREFIX,
    Entitlements,
    EntitlementsError,
    Identity,
)

BRIDGE_ACCOUNT = "BRIDGE"
"""The nats-server account of the bridge's streams and of every non-system identity."""
SYSTEM_ACCOUNT = "SYS"
"""The nats-server system account: advisories and server requests ($SYS)."""

SYSTEM_ROLES = frozenset({"system", "sysadmin"})
"""Roles whose identities are users of the system account (every other one is in BRIDGE)."""

IDENTITY_LINE_PREFIX = "#   identity "
"""Header lines that list the rendered identities (read back to report what an apply changed)."""

# JetStream's and nats-server's own API subjects (theirs, not names of ours).
_JS_API = "$JS.API"
_JS_API_ALL = f"{_JS_API}.>"
_JS_INFO = f"{_JS_API}.INFO"
_JS_ACK = "$JS.ACK"
_JS_FC_ALL = "$JS.FC.>"
_SYS_REQ_ALL = "$SYS.REQ.>"
_SYS_SERVER_CONNZ = "$SYS.REQ.SERVER.*.CONNZ"
# Every server's statistics (`nats server ls`, `server ping`; natscli counts the servers first).
_SYS_SERVER_PING = "$SYS.REQ.SERVER.PING"
# JetStream's state of every server, or of one by id (`nats server report jetstream`, and the
# meta group's peers that `nats server raft peer-remove` looks the peer up in).
_SYS_SERVER_JSZ = "$SYS.REQ.SERVER.*.JSZ"
# Removing a server for good from the JetStream meta group (`nats server raft peer-remove`).
_JS_SERVER_REMOVE = f"{_JS_API}.SERVER.REMOVE"
_ALL = ">"
_ANY_TOKEN = "*"


def _stream_info(stream: str) -> str:
    return f"{_JS_API}.STREAM.INFO.{stream}"


def _consumer_info(stream: str, consumer: str) -> str:
    return f"{_JS_API}.CONSUMER.INFO.{stream}.{consumer}"


def _consumer_create_filtered(stream: str, filter_subject: str) -> str:
    """Creating any named consumer of ``stream`` whose filter is ``filter_subject`` (the server
    checks the request's filter against the subject's, so the filter cannot be widened)."""
    return f"{_JS_API}.CONSUMER.CREATE.{stream}.{_ANY_TOKEN}.{filter_subject}"


def _msg_next(stream: str, consumer: str) -> str:
    return f"{_JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def _ack(stream: str, consumer: str) -> str:
    return f"{_JS_ACK}.{stream}.{consumer}.>"


def _under(prefix: str) -> str:
    return f"{prefix}.>"


def _config_reader() -> tuple[str, ...]:
    """Reading and watching the runtime configuration bucket (bridge/runtime_config.py): its
    stream's info, direct and leader gets, and an ordered consumer (with its flow control)."""
    stream = contract.kv_stream(contract.CONFIG_KV_BUCKET)
    return (
        _stream_info(stream),
        f"{_JS_API}.DIRECT.GET.{stream}.>",
        f"{_JS_API}.STREAM.MSG.GET.{stream}",
        f"{_JS_API}.CONSUMER.CREATE.{stream}",
        f"{_JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{_JS_API}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


@dataclass(frozen=True)
class Permissions:
    """One user's publish/subscribe permissions (nats-server's ``permissions`` block)."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    # True: one answer per request received; a number: at most that many answers.
    allow_responses: bool | int = False


@dataclass(frozen=True)
class User:
    """One rendered nats-server user: the identity, its server account and permissions."""

    identity: Identity
    account: str
    permissions: Permissions


def server_account(identity: Identity) -> str:
    """The nats-server account an identity's connections land in."""
    return SYSTEM_ACCOUNT if identity.role in SYSTEM_ROLES else BRIDGE_ACCOUNT


def inbox_prefix(identity: Identity) -> str:
    """The inbox prefix an identity's client must use (the only inboxes it may subscribe to).

    An orchestrator has its own (``_INBOX.orchestrator.<nkey>``), so no orchestrator reads
    another's replies; the other roles use their role's (``_INBOX.<role>``).
    """
    if identity.role == "orchestrator":
        return contract.identity_inbox_prefix(identity.role, identity.nkey)
    return contract.inbox_prefix(identity.role)


def _accounts(identity: Identity) -> list[str]:
    """The account tokens to render: ``*`` alone for every account, else sorted, deduplicated."""
    if identity.all_accounts:
        return [_ANY_TOKEN]
    return sorted(set(identity.accounts))


def _orchestrator(identity: Identity) -> Permissions:
    accounts = _accounts(identity)
    if accounts == [_ANY_TOKEN]:
        orders = [
            contract.SUBMIT_ALL,
            contract.CANCEL_ALL,
            contract.STATUS_ALL,
            contract.QUEUE_ALL,
            contract.QUEUE_BATCH_ALL,
            contract.REPLACE_ALL,
            contract.MASS_CANCEL_ALL,
        ]
        reports = [contract.EXECUTIONS_ALL]
    else:
        orders = [
            f(a)
            for a in accounts
            for f in (
                contract.submit,
                contract.cancel,
                contract.status,
                contract.queue,
                contract.queue_batch,
                contract.replace,
                contract.mass_cancel,
            )
        ]
        reports = [contract.executions_for_account(a) for a in accounts]
    executions = contract.EXECUTIONS_STREAM
    return Permissions(
        publish_allow=(
            *orders,
            _JS_INFO,
            _stream_info(contract.ORDERS_STREAM),
            _stream_info(executions),
            # Report streams (bridge/reports.py): an ephemeral pull consumer on EXECUTIONS per
            # reader, filtered to the identity's accounts, and its pull requests. It cannot
            # delete consumers; the server removes an abandoned one after inactive_threshold.
            *(_consumer_create_filtered(executions, r) for r in reports),
            _msg_next(executions, _ANY_TOKEN),
            # Readiness (BridgeClient.readiness): ping the engines' micro service, which every
            # running engine answers; not its INFO or STATS, nor any other service.
            contract.service_ping(contract.SERVICE_NAME),
            # Market data (public: every symbol): snapshots, and flow-controlled input streams.
            contract.MD_SNAPSHOT_ALL,
            contract.FEED_ALL,
            # Runtime configuration: watches the bucket (never writes it), says what it applied.
            *_config_reader(),
            contract.config_applied("client"),
            # Its sessions (cancel on disconnect): open, heartbeat, close. A session holds only
            # orders the identity was entitled to place.
            contract.SESSION_ALL,
        ),
        subscribe_allow=(
            _under(inbox_prefix(identity)),
            *reports,
            contract.MD_UPDATES_ALL,
            contract.MD_QUOTES_ALL,
            contract.MD_TRADES_ALL,
        ),
    )


def _operator(identity: Identity) -> Permissions:
    accounts = _accounts(identity)
    if accounts == [_ANY_TOKEN]:
        orders = [contract.STATUS_ALL, contract.CANCEL_ALL, contract.MASS_CANCEL_ALL]
    else:
        orders = [
            f(a) for a in accounts for f in (contract.status, contract.cancel, contract.mass_cancel)
        ]
    # Administers JetStream and reads everything; of the order operations only status
    # queries, cancels and mass cancels (the per-account kill switch), of its accounts.
    return Permissions(
        publish_allow=(
            _JS_API_ALL,
            # Flow-control replies of push consumers (nats stream view, ordered consumers):
            # without them a large read stalls.
            _JS_FC_ALL,
            _SYS_REQ_ALL,
            *orders,
            _under(inbox_prefix(identity)),
            # The NATS service API (`nats micro ls | info | stats | ping`): discovery requests
            # to every service instance.
            contract.SERVICE_ALL,
            # Runtime configuration: the only role that writes documents (`bridge config set`).
            contract.kv_key_subject(contract.CONFIG_KV_BUCKET, _ALL),
            # Market data snapshots (`bridge top`, the demo's top of book).
            contract.MD_SNAPSHOT_ALL,
        ),
        subscribe_allow=(_ALL,),
    )


def _engine(identity: Identity) -> Permissions:
    # Consumes the ORDERS work queue, serves order requests, publishes execution reports and
    # its refusals (alerts), maintains the order store and its leases. It may use the JetStream
    # API but not create, change, delete or purge streams, nor delete the ORDERS consumers.
    # As a NATS micro service it answers the service API's discovery requests ($SRV.PING,
    # INFO, STATS): subscribed to them, answered through allow_responses.
    inbox = _under(inbox_prefix(identity))
    return Permissions(
        publish_allow=(
            contract.EXECUTIONS_ALL,
            # Its journal (JOURNAL): the fsynced fact EXECUTIONS and the order store project.
            contract.JOURNAL_ALL,
            contract.ENGINE_ALL,
            # Partitioned engines re-publish queued orders to their partition's subject.
            contract.QUEUE_PARTITION_ALL,
            contract.alerts_from("engine"),
            _JS_API_ALL,
            f"{_JS_ACK}.{contract.ORDERS_STREAM}.>",
            contract.kv_key_subject(contract.ORDERS_KV_BUCKET, _ALL),
            contract.kv_key_subject(contract.LEASES_KV_BUCKET, _ALL),
            contract.kv_key_subject(contract.SESSIONS_KV_BUCKET, _ALL),
            # Market data of the symbols it owns, and what it did with a config document.
            contract.MD_UPDATES_ALL,
            contract.MD_QUOTES_ALL,
            contract.MD_TRADES_ALL,
            contract.config_applied("engine"),
            inbox,
        ),
        publish_deny=(
            *(f"{_JS_API}.STREAM.{op}.>" for op in ("CREATE", "UPDATE", "DELETE", "PURGE")),
            f"{_JS_API}.CONSUMER.DELETE.{contract.ORDERS_STREAM}.>",
        ),
        subscribe_allow=(
            contract.SUBMIT_ALL,
            contract.CANCEL_ALL,
            contract.STATUS_ALL,
            contract.REPLACE_ALL,
            contract.MASS_CANCEL_ALL,
            contract.SESSION_ALL,
            contract.ENGINE_ALL,
            contract.SERVICE_ALL,
            contract.MD_SNAPSHOT_ALL,
            contract.FEED_ALL,
            inbox,
        ),
        # Answers requests (orders and the service API's): one publish to the reply subject of
        # a message it received.
        # Partitioned engines run one service instance per partition they hold, and every
        # instance answers the service API's discovery requests (PING, INFO, STATS) from the
        # same identity: at most PARTITIONS answers plus one. An order request is answered
        # once (the engine's Incoming answers at most once).
        allow_responses=contract.PARTITIONS + 1,
    )


def _sentinel(identity: Identity) -> Permissions:
    # Raises alerts and reads the engines' refusals through its durable consumer on ALERTS.
    alerts, consumer = contract.ALERTS_STREAM, contract.SENTINEL_CONSUMER
    inbox = _under(inbox_prefix(identity))
    return Permissions(
        publish_allow=(
            contract.alerts_from("sentinel"),
            _JS_INFO,
            _stream_info(alerts),
            _consumer_info(alerts, consumer),
            _msg_next(alerts, consumer),
            _ack(alerts, consumer),
            inbox,
        ),
        subscribe_allow=(inbox,),
    )


def _system(identity: Identity) -> Permissions:
    # The sentinel's identity in the system account: authentication advisories, connection
    # listings (every server's or one's) and kicking a connection; nothing else of $SYS.
    inbox = _under(inbox_prefix(identity))
    return Permissions(
        publish_allow=(contract.sys_kick(_ANY_TOKEN), contract.SYS_CONNZ, _SYS_SERVER_CONNZ, inbox),
        subscribe_allow=(contract.SYS_AUTH_ERROR, inbox),
    )


def _sysadmin(identity: Identity) -> Permissions:
    # An operator's identity in the system account, for the cluster runbook: which servers
    # answer, their JetStream state and the meta group, and removing a dead server from it.
    # Not the connection listings, kicks, reloads, nor anything of account BRIDGE.
    inbox = _under(inbox_prefix(identity))
    return Permissions(
        publish_allow=(_SYS_SERVER_PING, _SYS_SERVER_JSZ, _JS_SERVER_REMOVE, inbox),
        subscribe_allow=(inbox,),
    )


_BY_ROLE = {
    "orchestrator": _orchestrator,
    "operator": _operator,
    "engine": _engine,
    "sentinel": _sentinel,
    "system": _system,
    "sysadmin": _sysadmin,
}


def permissions(identity: Identity) -> Permissions:
    """The permissions of one identity, by its role (and accounts)."""
    return _BY_ROLE[identity.role](identity)


def users(entitlements: Entitlements, *, source: str = "entitlements") -> list[User]:
    """Every identity as a server user, sorted by account then name.

    Raises :class:`EntitlementsError` naming the identity if a key is still a ``dev:``
    reference (render the resolved file, e.g. ``.dev/entitlements.toml``).
    """
    for identity in entitlements.identities:
        if identity.nkey.startswith(DEV_KEY_PREFIX):
            raise EntitlementsError(
                f"{source}: identities.{identity.name}.nkey: {identity.nkey!r} is a dev key "
                "reference, "
                "not a public NKey; render the resolved file (python -m bridge_dev.pki writes "
                ".dev/entitlements.toml)"
            )
    rendered = [
        User(identity=i, account=server_account(i), permissions=permissions(i))
        for i in entitlements.identities
    ]
    return sorted(rendered, key=lambda u: (u.account != BRIDGE_ACCOUNT, u.identity.name))


def identity_line(identity: Identity) -> str:
    """The header line of one identity: what ``apply`` compares to report a change."""
    accounts = ",".join(_accounts(identity)) or "-"
    return (
        f"{IDENTITY_LINE_PREFIX}{identity.name}: role={identity.role} "
        f"account={server_account(identity)} nkey={identity.nkey} accounts={accounts}"
    )


def rendered_identities(text: str) -> dict[str, str]:
    """The identity header lines of a rendered file, by identity name (empty if none)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(IDENTITY_LINE_PREFIX):
            name, _, rest = line.removeprefix(IDENTITY_LINE_PREFIX).partition(": ")
            found[name] = rest
    return found


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _subject_list(key: str, subjects: Sequence[str], indent: str) -> list[str]:
    lines = [f"{indent}{key}: ["]
    lines += [f"{indent}  {_q(s)}" for s in dict.fromkeys(subjects)]  # dedup, keep order
    return [*lines, f"{indent}]"]


def _permission_lines(p: Permissions, indent: str) -> list[str]:
    inner = indent + "  "
    lines = [f"{indent}permissions: {{", f"{inner}publish: {{"]
    lines += _subject_list("allow", p.publish_allow, inner + "  ")
    if p.publish_deny:
        lines += _subject_list("deny", p.publish_deny, inner + "  ")
    lines += [f"{inner}}}", f"{inner}subscribe: {{"]
    lines += _subject_list("allow", p.subscribe_allow, inner + "  ")
    lines.append(f"{inner}}}")
    if p.allow_responses is True:
        lines.append(f"{inner}allow_responses: true")
    elif p.allow_responses:
        lines.append(f"{inner}allow_responses: {{ max: {int(p.allow_responses)} }}")
    return [*lines, f"{indent}}}"]


def _user_lines(user: User, indent: str) -> list[str]:
    i = user.identity
    accounts = ", ".join(_accounts(i))
    comment = f"{indent}# {i.name} ({i.role}{'; accounts ' + accounts if accounts else ''})"
    lines = [comment, f"{indent}{{", f"{indent}  nkey: {_q(i.nkey)}"]
    lines += _permission_lines(user.permissions, indent + "  ")
    return [*lines, f"{indent}}}"]


def _account_lines(name: str, members: Iterable[User], *, jetstream: bool) -> list[str]:
    lines = [f"  {name} {{"]
    if jetstream:
        lines.append("    jetstream: enabled")
    lines.append("    users: [")
    for user in members:
        lines += _user_lines(user, "      ")
    return [*lines, "    ]", "  }"]


def render(entitlements: Entitlements, *, source: str) -> str:
    """The ``accounts.conf`` text for ``entitlements`` (read from ``source``, named in the
    header). Deterministic: the same entitlements always give the same bytes."""
    rendered = users(entitlements, source=source)
    header = [
        f"# accounts.conf -- generated from {source} by bridge-entitlements; do not edit.",
        "# The server's accounts and per-user permissions (bridge/security/server_auth.py);",
        "# change the entitlements file and run `bridge-entitlements apply` instead.",
        "#",
        *(identity_line(u.identity) for u in rendered),
        "",
        f"system_account: {SYSTEM_ACCOUNT}",
        "",
        "accounts {",
    ]
    body = _account_lines(
        BRIDGE_ACCOUNT, (u for u in rendered if u.account == BRIDGE_ACCOUNT), jetstream=True
    )
    body += _account_lines(
        SYSTEM_ACCOUNT, (u for u in rendered if u.account == SYSTEM_ACCOUNT), jetstream=False
    )
    return "\n".join([*header, *body, "}"]) + "\n"
