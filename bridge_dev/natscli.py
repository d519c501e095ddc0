"""The pinned natscli that ``./dev setup`` builds into ``.dev/bin``: run as one identity, and the
operators' saved contexts.

:func:`command` passes every flag explicitly (mutual TLS, NKey, the identity's inbox prefix) and
reads no saved context, so the tests and the demo do not depend on ``~/.config/nats``.

:func:`write_contexts` writes the contexts the runbooks use (``./dev setup`` runs
``python -m bridge_dev.natscli contexts``):

* ``bridge-operator``: the ``operator`` identity, a user of account ``BRIDGE`` (streams,
  consumers, KV, the service API, order status and cancel);
* ``bridge-system``: the ``operator-system`` identity (role ``sysadmin``), a user of the system
  account with only what the cluster runbook's ``nats server ...`` commands need.

natscli keeps contexts in ``$XDG_CONFIG_HOME/nats/context/<name>.json`` (default
``~/.config``) and the selected one in ``.../nats/context.txt``. Both contexts name absolute
paths into ``.dev/``. ``bridge-operator`` is selected only when no context is selected yet: a
user's own selection is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bridge_dev.pki import DevCredentials, IdentityCredentials
from bridge_dev.server import LOCAL_HOST, ServerHandle

NATS_CLI = Path(__file__).resolve().parents[1] / ".dev" / "bin" / "nats"

OPERATOR_CONTEXT = "bridge-operator"
"""The operator identity's context (account BRIDGE): the runbooks' default, selected."""
SYSTEM_CONTEXT = "bridge-system"
"""The sysadmin identity's context (system account): ``nats --context bridge-system server ...``."""
CONTEXTS: Mapping[str, tuple[str, str]] = {
    OPERATOR_CONTEXT: ("operator", "execution bridge operator (account BRIDGE)"),
    SYSTEM_CONTEXT: ("operator-system", "execution bridge sysadmin (system account SYS)"),
}
"""Context name -> (identity, description)."""
DEFAULT_URL = f"tls://{LOCAL_HOST}:4222"
"""``./dev server``'s client URL (``BRIDGE_NATS_PORT`` changes the port)."""
_SELECTED_FILE = "context.txt"


def command(handle: ServerHandle, identity: str, *args: str) -> list[str]:
    """The argv of ``nats ARGS...`` against ``handle`` as ``identity`` (e.g. "operator")."""
    who = handle.creds.identity(identity)
    return [
        str(NATS_CLI),
        "--no-context",
        f"--server={handle.url}",
        f"--tlsca={handle.creds.ca_file}",
        f"--tlscert={who.cert_file}",
        f"--tlskey={who.key_file}",
        f"--nkey={who.seed_file}",
        f"--inbox-prefix={who.inbox_prefix}",
        "--timeout=3s",
        *args,
    ]


def config_home(env: Mapping[str, str] | None = None) -> Path:
    """natscli's configuration root: ``$XDG_CONFIG_HOME/nats`` or ``~/.config/nats``."""
    environ = os.environ if env is None else env
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "nats"


def context_json(url: str, ca_file: Path, who: IdentityCredentials, description: str) -> str:
    """One context file's text (natscli's field names; absolute paths)."""
    data = {
        "description": description,
        "url": url,
        "ca": str(ca_file.resolve()),
        "cert": str(who.cert_file.resolve()),
        "key": str(who.key_file.resolve()),
        "nkey": str(who.seed_file.resolve()),
        "inbox_prefix": who.inbox_prefix,
    }
    return json.dumps(data, indent=2) + "\n"


def write_contexts(
    creds: DevCredentials, url: str = DEFAULT_URL, *, home: Path | None = None
) -> list[str]:
    """Write (or update) both contexts under ``home`` (default :func:`config_home`) for the
    server at ``url`` (comma-separated for a cluster); select ``bridge-operator`` if no context
    is selected. Returns one line per context (written / up to date) and about the selection."""
    root = home if home is not None else config_home()
    context_dir = root / "context"
    context_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, (identity, description) in CONTEXTS.items():
        path = context_dir / f"{name}.json"
        text = context_json(url, creds.ca_file, creds.identity(identity), description)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            lines.append(f"nats context {name}: up to date ({path})")
            continue
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        lines.append(f"nats context {name}: written ({path}, {identity} on {url})")
    selected_file = root / _SELECTED_FILE
    selected = selected_file.read_text(encoding="utf-8").strip() if selected_file.is_file() else ""
    if selected and (context_dir / f"{selected}.json").is_file():
        lines.append(f"nats context selected: {selected} (kept)")
    else:
        selected_file.write_text(OPERATOR_CONTEXT, encoding="utf-8")
        lines.append(f"nats context selected: {OPERATOR_CONTEXT}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from bridge_dev.pki import default_root, ensure_dev_credentials

    parser = argparse.ArgumentParser(
        prog="python -m bridge_dev.natscli",
        description="Write the natscli contexts bridge-operator and bridge-system.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    contexts = sub.add_parser("contexts", help="write the contexts (./dev setup runs this)")
    contexts.add_argument("--dir", type=Path, default=None, help="credentials root (default .dev)")
    port = os.environ.get("BRIDGE_NATS_PORT", "4222")
    contexts.add_argument(
        "--url",
        default=f"tls://{LOCAL_HOST}:{port}",
        help="server URL(s), comma-separated (default: ./dev server's, BRIDGE_NATS_PORT)",
    )
    args = parser.parse_args(argv)
    creds = ensure_dev_credentials(args.dir if args.dir is not None else default_root())
    for line in write_contexts(creds, args.url):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
