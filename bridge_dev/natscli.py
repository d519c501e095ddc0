"""The pinned natscli that ``./dev setup`` builds into ``.dev/bin``, run as one identity.

Every flag is explicit (mutual TLS, NKey, the identity's inbox prefix) and no saved context is
read, so the tests and the demo do not depend on ``~/.config/nats``."""

from __future__ import annotations

from pathlib import Path

from bridge_dev.server import ServerHandle

NATS_CLI = Path(__file__).resolve().parents[1] / ".dev" / "bin" / "nats"


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
