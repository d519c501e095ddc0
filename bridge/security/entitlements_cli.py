"""``bridge-entitlements``: check an entitlements file, render the server's accounts from it, and
apply a change to a running nats-server (render + configuration reload, no restart).

    bridge-entitlements check F
    bridge-entitlements render --entitlements F --out accounts.conf
    bridge-entitlements apply --entitlements F --config-dir D --pid P [--monitor-url URL]

``F`` must be concrete (every ``nkey`` a public key) for ``render`` and ``apply``; the dev file
``nats/entitlements.toml`` refers to dev keys (``dev:<name>``) that ``python -m bridge_dev.pki``
resolves into ``.dev/entitlements.toml``. ``D`` is the directory of the server's runtime
configuration (``nats.conf``, which includes ``accounts.conf`` from the same directory). ``P``
is the server's process id or its pid file. Exit status: 0 done, 1 invalid file or failed
reload (the message names the file, identity and field), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.security import entitlements as ent
from bridge.security import server_auth, server_reload


def _check(args: argparse.Namespace) -> int:
    path: Path = args.file
    entitlements = ent.load(path)
    count = len(entitlements.identities)
    print(f"{path}: valid (version {entitlements.version}, {count} identities)")
    width = max(len(i.name) for i in entitlements.identities)
    for identity in entitlements.identities:
        accounts = ", ".join(identity.accounts) if identity.accounts else "-"
        print(
            f"  {identity.name:<{width}}  {identity.role:<12} "
            f"server account {server_auth.server_account(identity):<6}  "
            f"trading accounts {accounts}  nkey {identity.nkey}"
        )
    if not entitlements.concrete:
        dev = [i.name for i in entitlements.identities if i.nkey.startswith(ent.DEV_KEY_PREFIX)]
        print(
            f"note: dev key references ({', '.join(dev)}): render the resolved file "
            "(python -m bridge_dev.pki writes .dev/entitlements.toml)"
        )
    return 0


def _render(args: argparse.Namespace) -> int:
    path: Path = args.entitlements
    text = server_auth.render(ent.load(path), source=str(path))
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        server_reload.write_atomic(args.out, text)
        print(f"wrote {args.out} from {path}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    path: Path = args.entitlements
    entitlements = ent.load(path)
    pid = server_reload.read_pid(args.pid)
    changes = server_reload.write_accounts(args.config_dir, entitlements, source=str(path))
    target = args.config_dir / server_reload.ACCOUNTS_FILE
    print(f"wrote {target} from {path}")
    for line in changes.lines():
        print(f"  {line}")
    loaded = server_reload.reload(pid, args.monitor_url, timeout=args.timeout)
    if loaded is None:
        print(f"signalled nats-server {pid} to reload (its log: 'Reloaded server configuration')")
    else:
        print(f"nats-server {pid} applied the reload (config_load_time {loaded})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge-entitlements",
        description="Check an entitlements file, render nats-server accounts from it, apply them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a file; print its identities and accounts")
    check.add_argument("file", type=Path, help="entitlements file")
    check.set_defaults(run=_check)

    render = sub.add_parser("render", help="write the server's accounts block (accounts.conf)")
    render.add_argument("--entitlements", type=Path, required=True, help="entitlements file")
    render.add_argument("--out", type=Path, required=True, help="output file ('-' = stdout)")
    render.set_defaults(run=_render)

    apply = sub.add_parser("apply", help="render into the server's config dir and reload it")
    apply.add_argument("--entitlements", type=Path, required=True, help="entitlements file")
    apply.add_argument(
        "--config-dir", type=Path, required=True, help="directory of nats.conf and accounts.conf"
    )
    apply.add_argument("--pid", required=True, help="nats-server process id, or its pid file")
    apply.add_argument(
        "--monitor-url",
        default=None,
        help="monitoring URL (e.g. http://127.0.0.1:8222): wait until the server applied it",
    )
    apply.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the reload (default 10)"
    )
    apply.set_defaults(run=_apply)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (ent.EntitlementsError, server_reload.ReloadError) as exc:
        print(f"bridge-entitlements {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bridge-entitlements {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
