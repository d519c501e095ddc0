"""``bridge``: the operators' command line (click). One command (or group) per module:

==========================  =======================================================
``bridge provision``        create/update the JetStream objects (``--dry-run``)
``bridge health``           engine /healthz + /readyz, server /healthz, service ping
``bridge streams``          ORDERS, EXECUTIONS, ALERTS, KV buckets and consumers
``bridge tail ACCOUNT``     live execution reports of one account
``bridge submit ...``       send an order (orchestrator identity)
``bridge status ...``       the engine's record of an order
``bridge cancel ...``       cancel a resting order
``bridge orders ...``       cancel-all (mass cancel; ``--halt``: the account's kill switch), resume
``bridge top``              live view of the metrics endpoints (``top`` extra: rich)
``bridge alerts``           the newest security alerts
``bridge audit verify``     check the execution journal's hash chains
``bridge config ...``       runtime configuration documents: get, set, diff, history
``bridge sessions ...``     orchestrator sessions and the live orders they hold
``bridge partitions``       partition -> owning engine -> epoch, and the live engines
==========================  =======================================================

Connection options, the identity and the exit codes are the same everywhere
(:mod:`bridge.cli._common`): ``--config FILE`` / ``BRIDGE_*`` settings, ``--nats-url``; exit 0
success, 1 a definite negative answer, 2 could not run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from bridge import __version__
from bridge.cli.alerts import alerts, render_alert
from bridge.cli.audit import audit
from bridge.cli.config import config
from bridge.cli.health import health
from bridge.cli.mass_cancel import orders as orders_group
from bridge.cli.orders import cancel, status, submit
from bridge.cli.partitions import partitions
from bridge.cli.provision import provision
from bridge.cli.sessions import sessions
from bridge.cli.streams import streams
from bridge.cli.tail import tail
from bridge.cli.top import top
from bridge.logs import configure_logging

__all__ = ["cli", "main", "render_alert"]


@click.group(name="bridge", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bridge")
def cli() -> None:
    """Operator tools of the execution bridge. `bridge COMMAND --help` for each command.

    Connection: the client's settings (BRIDGE_* environment variables, the TOML file
    BRIDGE_CONFIG_FILE or --config names) with the operator identity's TLS files and NKey
    seed; --nats-url overrides the URL. Exit codes: 0 ok, 1 a negative answer (unhealthy,
    rejected, not found, broken), 2 could not run."""


for command in (
    provision,
    health,
    streams,
    tail,
    submit,
    status,
    cancel,
    orders_group,
    top,
    alerts,
    audit,
    config,
    sessions,
    partitions,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: runs a command and returns its exit code. Logging (the client's
    warnings and errors, on stderr) is configured here, for the process, not by ``cli`` itself:
    embedding ``cli`` (or click's test runner) leaves the host's logging alone."""
    configure_logging("WARNING")
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="bridge")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
