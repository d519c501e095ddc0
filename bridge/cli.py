"""``bridge``: the operators' command line. Subcommands are added here, one function each.

``bridge alerts [--last N]`` prints the newest security alerts of the ALERTS stream, one line
each (who, what, which subject or account, which connection, what was done), oldest first.

``bridge audit verify`` walks a stream (default EXECUTIONS) and checks every engine's hash chain
(:mod:`bridge.audit`): it prints ``OK: ...`` and exits 0, or ``BROKEN at stream sequence ...``
naming the first broken link and exits 1 (2: it could not run, e.g. no connection).

Connection: the usual client settings (``BRIDGE_*`` environment variables and/or the TOML file
``BRIDGE_CONFIG_FILE`` or ``--config`` names) with the **operator** identity's TLS files and NKey
seed (the inbox prefix defaults to the operator's); ``--nats-url`` overrides the URL. The engine
keys come from the entitlements file (identities of role ``engine``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsConnection

from bridge import audit, contract
from bridge.config import BridgeSettings
from bridge.logs import configure_logging
from bridge.security import entitlements
from bridge.transport import tls_context
from bridge.v1 import security_pb2

DEFAULT_ENTITLEMENTS = Path(".dev") / "entitlements.toml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description="Operator tools of the bridge.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    audit_parser = commands.add_parser("audit", help="the tamper-evident execution journal")
    audit_commands = audit_parser.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="check every engine's hash chain in a stream",
        description="Walk a stream and check each engine's report chain: prev, digest and "
        "signature of every link. Exit 0 (OK), 1 (BROKEN) or 2 (could not check).",
    )
    verify.add_argument("--stream", default=contract.EXECUTIONS_STREAM, help="default %(default)s")
    verify.add_argument(
        "--entitlements",
        type=Path,
        default=DEFAULT_ENTITLEMENTS,
        help="entitlements file naming the engine keys (default %(default)s)",
    )
    verify.add_argument("--nats-url", help="NATS URL(s), comma-separated (default: settings)")
    verify.add_argument(
        "--config", type=Path, help="settings TOML of the operator connection (BRIDGE_CONFIG_FILE)"
    )
    verify.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per read (default %(default)s)"
    )
    verify.set_defaults(run=_audit_verify)
    alerts = commands.add_parser(
        "alerts",
        help="the newest security alerts",
        description="Print the newest SecurityAlerts of the ALERTS stream, oldest first.",
    )
    alerts.add_argument("--last", type=int, default=20, help="how many (default %(default)s)")
    alerts.add_argument("--nats-url", help="NATS URL(s), comma-separated (default: settings)")
    alerts.add_argument(
        "--config", type=Path, help="settings TOML of the operator connection (BRIDGE_CONFIG_FILE)"
    )
    alerts.set_defaults(run=_alerts)
    return parser


def render_alert(seq: int, alert: security_pb2.SecurityAlert) -> str:
    """One alert as one line: when, who raised it, kind, who, where, which connection, action."""
    when = dt.datetime.fromtimestamp(alert.time_unix_ns / 1e9, dt.UTC).isoformat(
        timespec="milliseconds"
    )
    kind = security_pb2.SecurityViolationKind.Name(alert.kind)
    kind = kind.removeprefix("SECURITY_VIOLATION_KIND_").lower()
    fields = {
        "identity": alert.identity,
        "nkey": alert.nkey,
        "account": alert.account,
        "subject": alert.subject,
        "cid": str(alert.connection_id) if alert.connection_id else "",
        "remote": alert.remote_address,
        "client_order_id": alert.client_order_id,
        "action": alert.action,
        "reason": alert.reason,
    }
    detail = " ".join(f"{k}={v!r}" for k, v in fields.items() if v)
    return f"#{seq} {when} {alert.source} {kind} {detail}"


async def _read_alerts(args: argparse.Namespace) -> list[str]:
    nc = await _connect(_settings(args))
    try:
        js = nc.jetstream()
        state = (await js.stream_info(contract.ALERTS_STREAM)).state
        lines = []
        first = max(state.first_seq, state.last_seq - max(args.last, 0) + 1)
        for seq in range(first, state.last_seq + 1):
            try:
                msg = await js.get_msg(contract.ALERTS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue  # deleted (the stream denies deletes; or aged out meanwhile)
            alert = security_pb2.SecurityAlert.FromString(msg.data or b"")
            lines.append(render_alert(seq, alert))
        return lines
    finally:
        await nc.close()


def _alerts(args: argparse.Namespace) -> int:
    try:
        lines = asyncio.run(_read_alerts(args))
    except (OSError, ValueError, nats.errors.Error, TimeoutError) as exc:
        print(f"error: reading {contract.ALERTS_STREAM}: {exc!r}", file=sys.stderr)
        return 2
    print("\n".join(lines) if lines else "no alerts")
    return 0


def _settings(args: argparse.Namespace) -> BridgeSettings:
    if args.config is not None:
        os.environ["BRIDGE_CONFIG_FILE"] = str(args.config)
    overrides: dict[str, object] = {}
    if args.nats_url:
        overrides["nats_url"] = args.nats_url
    return BridgeSettings(**overrides)  # type: ignore[arg-type]


async def _connect(settings: BridgeSettings) -> NatsConnection:
    """An operator connection; its inbox is the operator's unless the settings name one."""
    inbox = settings.inbox_prefix
    if "inbox_prefix" not in settings.model_fields_set:
        inbox = contract.inbox_prefix("operator")
    seed = settings.nkey_seed.get_secret_value() if settings.nkey_seed is not None else None
    return await nats.connect(
        servers=[u.strip() for u in settings.nats_url.split(",") if u.strip()],
        name="bridge-audit",
        tls=tls_context(settings),
        nkeys_seed=str(settings.nkey_seed_file) if settings.nkey_seed_file else None,
        nkeys_seed_str=seed,
        inbox_prefix=inbox,
        connect_timeout=max(1, settings.connect_timeout_ms // 1000),
        allow_reconnect=False,
    )


async def _verify(args: argparse.Namespace) -> audit.Result:
    ents = entitlements.load(args.entitlements)
    keys = audit.engine_keys((i.name, i.nkey) for i in ents.with_role("engine"))
    nc = await _connect(_settings(args))
    try:
        return await audit.verify_stream(nc.jetstream(), args.stream, keys, timeout=args.timeout)
    finally:
        await nc.close()


def _audit_verify(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_verify(args))
    except (entitlements.EntitlementsError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (nats.errors.Error, TimeoutError) as exc:
        print(f"error: reading stream {args.stream}: {exc!r}", file=sys.stderr)
        return 2
    print(result.render())
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("WARNING")
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
