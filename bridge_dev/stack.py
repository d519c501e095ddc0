"""The whole stack in Docker (``docker-compose.yml``): every step of ``./dev stack up``.

``up`` takes these steps, each idempotent:

1. the dev credentials (``.dev/pki``, ``.dev/nkeys``, ``.dev/entitlements.toml``) and the
   server's runtime config rendered from the entitlements (``.dev/nats-config/``); for the
   default stack, ``.env`` (project name, uid) so that compose typed by hand finds it;
2. the images, built locally (:mod:`bridge_dev.images`; skipped when up to date);
3. the state directories (``.dev/stack/nats-store``, ``.dev/stack/prometheus``, owned by the
   caller: the containers run as the caller's uid) and ``prometheus.yml``, rendered from
   ``ops/prometheus/prometheus.yml`` with this stack's engine port;
4. ``compose up -d nats``, wait until healthy, provision JetStream as the operator;
5. ``compose up -d`` the rest, wait until every container is healthy.

Compose is ``docker compose`` (v2 plugin) when there is one, else ``docker-compose`` (Debian's
1.29); the file uses only features both know. Grafana's official image is the only one not
built here: when it is neither present nor pullable, ``up`` (with no services named) brings up
the rest and says so. The smoke test (tests/containers/test_compose_stack.py) runs a second
stack with its own :class:`Stack` (project, ports, directories) beside the default one.

CLI: ``python -m bridge_dev.stack up [SERVICE...] | down | ps | logs [SERVICE...]``
(``./dev stack ...`` starts Docker first when needed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.security import server_reload
from bridge_dev import images, nats_config
from bridge_dev.pki import DevCredentials, ensure_dev_credentials
from bridge_dev.provision import provision
from bridge_dev.server import LOCAL_HOST, connect_as

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = ("nats", "engine", "prometheus", "grafana")
BUILT_HERE = ("nats", "engine", "prometheus")
HEALTHY_TIMEOUT_S = 90.0
_POLL_S = 0.25
_STATE = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"


class StackError(RuntimeError):
    """A step of the stack failed (the message says which, with the container's log tail)."""


@dataclass(frozen=True)
class Stack:
    """One compose project: its name, host ports and directories (defaults: the dev stack)."""

    project: str = "execution-bridge"
    creds_root: Path = REPO / ".dev"
    state_dir: Path = REPO / ".dev" / "stack"
    nats_port: int = 4222
    nats_http_port: int = 8222
    engine_http_port: int = 9464
    prometheus_port: int = 9090
    grafana_port: int = 3000
    scrape_interval: str | None = None  # None: ops/prometheus/prometheus.yml's
    health_interval: str = "5s"  # the healthchecks' (Docker 20.10 has no start_interval)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        return f"tls://{LOCAL_HOST}:{self.nats_port}"

    @property
    def engine_url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.engine_http_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.prometheus_port}"

    @property
    def nats_config_dir(self) -> Path:
        """Where ``python -m bridge_dev.nats_config`` writes it too (runbooks: re-render, HUP)."""
        return self.creds_root / nats_config.CONFIG_DIR

    def env(self) -> dict[str, str]:
        """The variables docker-compose.yml interpolates."""
        return {
            **os.environ,
            "BRIDGE_UID": str(os.getuid()),
            "BRIDGE_GID": str(os.getgid()),
            "BRIDGE_DEV_DIR": str(self.creds_root),
            "BRIDGE_STACK_DIR": str(self.state_dir),
            "BRIDGE_NATS_CONFIG_DIR": str(self.nats_config_dir),
            "BRIDGE_NATS_PORT": str(self.nats_port),
            "BRIDGE_NATS_HTTP_PORT": str(self.nats_http_port),
            "BRIDGE_ENGINE_HTTP_PORT": str(self.engine_http_port),
            "BRIDGE_PROMETHEUS_PORT": str(self.prometheus_port),
            "BRIDGE_GRAFANA_PORT": str(self.grafana_port),
            "BRIDGE_HEALTH_INTERVAL": self.health_interval,
            **self.extra_env,
        }


def write_dotenv(stack: Stack) -> Path:
    """``<repo>/.env`` (git-ignored), read by both composes in the repo: the project name and
    this user's uid/gid, so ``docker compose ps|logs|kill|up -d engine`` typed by hand (the
    runbooks do) acts on the stack ``./dev stack up`` started, as it does."""
    path = REPO / ".env"
    path.write_text(
        "# Written by ./dev stack up (bridge_dev/stack.py) for compose by hand; git-ignored.\n"
        f"COMPOSE_PROJECT_NAME={stack.project}\n"
        f"BRIDGE_UID={os.getuid()}\nBRIDGE_GID={os.getgid()}\n",
        "utf-8",
    )
    return path


def compose_command() -> list[str]:
    """``docker compose`` when the v2 plugin answers, else ``docker-compose`` (v1)."""
    override = os.environ.get("BRIDGE_COMPOSE")
    if override:
        return override.split()
    plugin = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")


def compose(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run compose for ``stack`` (its project name, the repo's compose file, its variables)."""
    cmd = [*compose_command(), "-p", stack.project, "-f", str(COMPOSE_FILE), *args]
    got = subprocess.run(
        cmd, cwd=REPO, env=stack.env(), capture_output=True, text=True, check=False
    )
    if check and got.returncode != 0:
        raise StackError(f"{' '.join(cmd)} failed ({got.returncode}):\n{got.stdout}{got.stderr}")
    return got


def prepare(stack: Stack) -> DevCredentials:
    """Steps 1 and 3: credentials, nats config, state directories, prometheus.yml."""
    creds = ensure_dev_credentials(stack.creds_root)
    config_dir = stack.nats_config_dir
    config_dir.mkdir(parents=True, exist_ok=True)
    # The container mounts the repo's nats/ at /etc/bridge/nats and this directory at
    # /etc/bridge/.dev/nats-config (docker-compose.yml): the include is relative to that.
    server_reload.write_atomic(
        config_dir / nats_config.RUNTIME_CONFIG,
        nats_config.runtime_config_text("../../nats/server.conf"),
    )
    nats_config.render_accounts(config_dir, creds.entitlements_file)
    for sub in ("nats-store", "prometheus"):
        (stack.state_dir / sub).mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = yaml.safe_load(
        (REPO / "ops" / "prometheus" / "prometheus.yml").read_text("utf-8")
    )
    config["rule_files"] = ["/etc/prometheus/alerts.yml"]
    if stack.scrape_interval is not None:
        config["global"]["scrape_interval"] = stack.scrape_interval
    for job in config["scrape_configs"]:
        if job["job_name"] == "bridge-engine":
            job["static_configs"] = [{"targets": [f"{LOCAL_HOST}:{stack.engine_http_port}"]}]
    (stack.state_dir / "prometheus.yml").write_text(
        "# Rendered by bridge_dev/stack.py from ops/prometheus/prometheus.yml; do not edit.\n"
        + yaml.safe_dump(config, sort_keys=False),
        "utf-8",
    )
    return creds


def container_id(stack: Stack, service: str) -> str:
    got = compose(stack, "ps", "-q", service)
    ids = got.stdout.split()
    if not ids:
        raise StackError(f"service {service} has no container")
    return ids[0]


def _inspect(cid: str, fmt: str) -> str:
    got = subprocess.run(
        ["docker", "inspect", "--format", fmt, cid], capture_output=True, text=True, check=False
    )
    return got.stdout.strip()


def wait_healthy(stack: Stack, services: Sequence[str], timeout: float = HEALTHY_TIMEOUT_S) -> None:
    """Wait until each service's container reports ``healthy`` (its compose healthcheck)."""
    deadline = time.monotonic() + timeout
    for service in services:
        cid = container_id(stack, service)
        while True:
            health = _inspect(cid, _STATE)
            if health.endswith("healthy") and not health.endswith("unhealthy"):
                break
            if time.monotonic() > deadline or health.startswith(("exited", "dead")):
                logs = compose(stack, "logs", "--tail", "30", service, check=False)
                raise StackError(f"{service} not healthy ({health}):\n{logs.stdout}{logs.stderr}")
            time.sleep(_POLL_S)


def provision_jetstream(stack: Stack, creds: DevCredentials) -> list[str]:
    """Step 4's provisioning, as the operator, over the published client port."""

    async def run() -> list[str]:
        nc = await connect_as(stack.nats_url, creds, "operator")
        try:
            return await provision(nc)
        finally:
            await nc.close()

    return asyncio.run(run())


def grafana_available(timeout: float = 60.0) -> bool:
    """The compose file's Grafana image is present, or can be pulled now."""
    spec = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    image = spec["services"]["grafana"]["image"]
    run = subprocess.run
    if run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode == 0:
        return True
    try:
        pulled = run(["docker", "pull", "-q", image], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return pulled.returncode == 0


def up(stack: Stack, services: Sequence[str] = (), say: Any = print) -> None:
    """Every step; ``services`` defaults to all (Grafana only when its image is available)."""
    wanted = list(services) or list(SERVICES)
    unknown = sorted(set(wanted) - set(SERVICES))
    if unknown:
        raise StackError(f"unknown services {unknown} (known: {', '.join(SERVICES)})")
    if not services and not grafana_available():
        wanted.remove("grafana")
        say("grafana: its image cannot be found or pulled here; bringing up the rest")
    creds = prepare(stack)
    say(f"credentials {stack.creds_root}, state {stack.state_dir}")
    if stack == Stack():
        say(f"wrote {write_dotenv(stack)} (project {stack.project}, your uid) for compose by hand")
    for built in images.build_all([images.NATS, images.ENGINE, images.PROMETHEUS]):
        say(f"{built.image}: {'built' if built.built else 'up to date'}")
    compose(stack, "up", "-d", "nats")
    wait_healthy(stack, ["nats"])
    for line in provision_jetstream(stack, creds):
        say(line)
    rest = [s for s in wanted if s != "nats"]
    if rest:
        compose(stack, "up", "-d", *rest)
        wait_healthy(stack, rest)
    say(f"up and healthy: {', '.join(['nats', *rest])}")
    say(f"  nats {stack.nats_url} (monitoring http://{LOCAL_HOST}:{stack.nats_http_port})")
    if "engine" in rest:
        say(f"  engine {stack.engine_url}/readyz, /metrics")
    if "prometheus" in rest:
        say(f"  prometheus {stack.prometheus_url}")
    if "grafana" in rest:
        say(f"  grafana http://{LOCAL_HOST}:{stack.grafana_port}")


def down(stack: Stack, *, volumes: bool = False) -> None:
    """Stop and remove the containers (and, with ``volumes``, Grafana's named volume)."""
    compose(stack, "down", "--remove-orphans", *(["-v"] if volumes else []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_dev.stack", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="every step, then the services up and healthy")
    up_cmd.add_argument("services", nargs="*", choices=[[], *SERVICES], metavar="SERVICE")
    sub.add_parser("down", help="stop and remove the containers (state stays in .dev/stack)")
    sub.add_parser("ps", help="compose ps")
    logs_cmd = sub.add_parser("logs", help="compose logs")
    logs_cmd.add_argument("services", nargs="*", metavar="SERVICE")
    args = parser.parse_args(argv)
    stack = Stack()
    try:
        if args.command == "up":
            up(stack, args.services)
        elif args.command == "down":
            down(stack)
        else:
            extra = args.services if args.command == "logs" else []
            print(compose(stack, args.command, *extra).stdout, end="")
    except (StackError, images.ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
