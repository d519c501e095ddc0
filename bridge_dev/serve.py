"""``./dev server``: a local, provisioned nats-server (and with ``--engine`` the engine) until
Ctrl-C or SIGTERM.

CLI: ``python -m bridge_dev.serve [--port 4222] [--http-port 8222] [--store-dir DIR]
[--dir DIR] [--engine] [--sentinel [--webhook-url URL]]`` ensures dev credentials, starts the
server, provisions JetStream as the operator, optionally starts the release-built engine
(``engine-rs/config/dev.toml``) and the security sentinel (``bridge-sentinel``), writes
the orchestrator's connection settings to ``<dir>/orchestrator.toml`` and the operator's to
``<dir>/operator.toml`` (for the ``bridge`` command line) and prints what to do with them,
e.g. ``BRIDGE_CONFIG_FILE=.dev/orchestrator.toml python examples/orchestrator.py``,
and how to apply a changed entitlements file (the server's runtime configuration is in
``<dir>/nats-config/``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from bridge_dev import natscli
from bridge_dev.engine import EngineError, EngineProcess, client_settings, write_client_config
from bridge_dev.nats_config import CONFIG_DIR, PID_FILE
from bridge_dev.pki import default_root, ensure_dev_credentials
from bridge_dev.sentinel import SentinelError, SentinelProcess
from bridge_dev.server import (
    REPO_ROOT,
    LocalNatsServer,
    NatsServerError,
    ServerHandle,
    _log_tail,
    _provision_as_operator,
)

ORCHESTRATOR_CONFIG = "orchestrator.toml"
"""File (under the credentials root) with the orchestrator's connection settings."""
OPERATOR_CONFIG = "operator.toml"
"""File (under the credentials root) with the operator's connection settings (``bridge`` CLI)."""


def _cli_hint(handle: ServerHandle, role: str) -> str:
    """The natscli command line of ``role``: the pinned one ``./dev setup`` builds, if there."""
    rc = handle.creds.role(role)
    pinned = REPO_ROOT / ".dev" / "bin" / "nats"
    nats = pinned if pinned.exists() else "nats"
    return (
        f"{nats} -s {handle.url} --tlsca {handle.creds.ca_file} --tlscert {rc.cert_file} "
        f"--tlskey {rc.key_file} --nkey {rc.seed_file} --inbox-prefix {rc.inbox_prefix}"
    )


def _contexts_hint(handle: ServerHandle) -> str:
    """How to reach this server through the contexts ``./dev setup`` wrote."""
    use = f"nats --context {natscli.OPERATOR_CONTEXT} | {natscli.SYSTEM_CONTEXT} ..."
    if handle.url == natscli.DEFAULT_URL:
        return use
    return (
        f"{use} after python -m bridge_dev.natscli contexts --url {handle.url} "
        f"(./dev setup points them at {natscli.DEFAULT_URL})"
    )


def _apply_hint(server: LocalNatsServer, handle: ServerHandle) -> str:
    return (
        f"bridge-entitlements apply --entitlements {server.entitlements_file} "
        f"--config-dir {server.config_dir} --pid {server.config_dir / PID_FILE} "
        f"--monitor-url {handle.monitor_url}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge_dev.serve",
        description="Run a local nats-server with the bridge config, dev PKI and JetStream.",
    )
    parser.add_argument("--port", type=int, default=4222, help="client port (0 = random)")
    parser.add_argument("--http-port", type=int, default=8222, help="monitoring port")
    parser.add_argument(
        "--store-dir", type=Path, default=None, help="JetStream store (default .dev/nats-store)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="credentials root (default .dev)")
    parser.add_argument(
        "--engine", action="store_true", help="also run the engine (release build, dev config)"
    )
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="also run the security sentinel (kicks and alerts; log <dir>/sentinel.log)",
    )
    parser.add_argument(
        "--webhook-url", default=None, help="the sentinel's Alertmanager-format webhook"
    )
    args = parser.parse_args(argv)

    root: Path = args.dir if args.dir is not None else default_root()
    log: list[str] = []
    creds = ensure_dev_credentials(root, log=log)
    for line in log:
        print(line)
    store_dir: Path = args.store_dir if args.store_dir is not None else root / "nats-store"

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    server = LocalNatsServer(
        creds,
        port=args.port,
        http_port=args.http_port,
        store_dir=store_dir,
        log_file=root / "nats-server.log",
        config_dir=root / CONFIG_DIR,
    )
    with ExitStack() as stack:
        stack.callback(server.cleanup)
        try:
            handle = server.start()
            for line in asyncio.run(_provision_as_operator(handle)):
                print(line)
            print(f"nats-server {handle.pid} ready at {handle.url} ({handle.monitor_url})")
            print(f"store {handle.store_dir}, log {server.log_file}")
            engine: EngineProcess | None = None
            if args.engine:
                # The engine's default HTTP port (the one a scrape config expects), unless
                # BRIDGE_HTTP_LISTEN says otherwise.
                listen = os.environ.get("BRIDGE_HTTP_LISTEN", "127.0.0.1:9464")
                engine = EngineProcess(
                    handle, log_file=root / "engine.log", env={"BRIDGE_HTTP_LISTEN": listen}
                )
                stack.callback(engine.stop)
                engine.start()
                print(f"engine {engine.pid} ready (log {engine.log_file})")
                print(f"engine health and metrics: {engine.readyz_url}, {engine.metrics_url}")
            sentinel: SentinelProcess | None = None
            if args.sentinel:
                sentinel = SentinelProcess(
                    handle, log_file=root / "sentinel.log", webhook_url=args.webhook_url
                )
                stack.callback(sentinel.stop)
                sentinel.start()
                print(f"sentinel {sentinel.pid} ready (log {sentinel.log_file})")
            config = write_client_config(client_settings(handle), root / ORCHESTRATOR_CONFIG)
            operator = write_client_config(
                client_settings(handle, role="operator"), root / OPERATOR_CONFIG
            )
            print(f"operator CLI: {_cli_hint(handle, 'operator')}")
            print(f"natscli contexts: {_contexts_hint(handle)}")
            urls = f" --engine-url {engine.http_url}" if engine is not None else ""
            print(
                f"bridge CLI: export BRIDGE_CONFIG_FILE={operator}; .venv/bin/bridge health"
                f"{urls} --monitor-url {handle.monitor_url} (and streams, tail, status, ...)"
            )
            print(f"entitlements changed: python -m bridge_dev.pki; {_apply_hint(server, handle)}")
            print(f"orchestrator: BRIDGE_CONFIG_FILE={config} python examples/orchestrator.py")
            print("Ctrl-C or SIGTERM to stop", flush=True)
            while not stop.wait(0.5):
                if not server.running:
                    print(
                        f"nats-server exited unexpectedly; log tail:\n{_log_tail(server.log_file)}",
                        file=sys.stderr,
                    )
                    return 1
                if engine is not None and not engine.running:
                    print(f"engine exited; log tail:\n{engine.log_tail()}", file=sys.stderr)
                    return 1
                if sentinel is not None and not sentinel.running:
                    print(f"sentinel exited; log tail:\n{sentinel.log_tail()}", file=sys.stderr)
                    return 1
        except (NatsServerError, EngineError, SentinelError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
