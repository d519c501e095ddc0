"""The runbooks' ``nats ...`` and ``bridge ...`` commands, run as written against live servers,
so they cannot rot.

Every ``nats`` and ``bridge`` line of a ```` ```sh ```` block of ``runbooks/*.md``
(tests/integration/runbook_commands.py) runs with the pinned natscli (``.dev/bin/nats``) and the
contexts ``./dev setup`` writes (:func:`bridge_dev.natscli.write_contexts`, here into a private
``XDG_CONFIG_HOME`` and pointing at the test's servers), and with the venv's ``bridge``
console script reading the operator's settings from ``.dev/operator.toml`` (as ``./dev server``
writes it; also ``BRIDGE_CONFIG_FILE``) and finding the engine and the server's monitoring port
by their own variables (``BRIDGE_HTTP_LISTEN``, ``BRIDGE_NATS_HTTP_PORT``):

* every runbook but ``cluster.md``: against one provisioned server with an engine
  (``engine-1``, seed generation 1) that has executed orders ``ACC1/ORD-1`` and ``ACC1/ORD-7``,
  the names the runbooks use;
* ``cluster.md``: against an unprovisioned 3-node cluster, in file order: its provisioning
  commands (afterwards the definitions must be up to date, i.e. the runbook provisions what
  ``bridge/jetstream/*.json`` say), its checks, and last its ``raft peer-remove`` of a node the
  test stopped (the runbook's ``nats-c``).

Each distinct command line runs once per target, under ``bash -o pipefail``, and must exit 0
(or what ``EXIT_CODES`` says, and why) and leave no permissions violation in the servers' logs.
``SKIPPED`` in runbook_commands.py lists what is not run, and why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bridge import BridgeClient, Order, OrderType, Side, TimeInForce
from bridge_dev import natscli
from bridge_dev.cluster import LocalNatsCluster
from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.pki import DevCredentials
from bridge_dev.provision import provision
from bridge_dev.server import REPO_ROOT, ServerHandle, connect_as
from tests.integration.runbook_commands import (
    EXIT_CODES,
    SKIPPED,
    RunbookCommand,
    distinct,
    runbook_commands,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not natscli.NATS_CLI.exists(), reason="natscli missing: run ./dev setup (.dev/bin/nats)"
    ),
]

COMMANDS = runbook_commands()
RUN = distinct([c for c in COMMANDS if c.skipped is None])
ON_SERVER = [c for c in RUN if not c.on_cluster]
ON_CLUSTER = [c for c in RUN if c.on_cluster and not c.last]
LAST_ON_CLUSTER = [c for c in RUN if c.on_cluster and c.last]
ORDERS = ("ORD-1", "ORD-7")
"""The runbooks' example orders, all of account ACC1."""
ACCOUNT = "ACC1"
ENGINE_ID = "engine-1"
STOPPED_NODE = "nats-c"
"""The runbook's name of the node it removes; the test's third node stands for it."""
STAND_IN = "desk-c"
"""entitlements-change.md's new identity; desk-a's files stand for it."""
_VIOLATION = "Violation"
_JQ_STAND_IN = """# No jq on this machine: parse the input as JSON (fail if it is not), apply a
# filter of the form .field (-r: raw strings), pass the JSON on for any other filter.
import json, re, sys
args = [a for a in sys.argv[1:] if not a.startswith("-")]
raw = "-r" in sys.argv[1:]
doc = json.load(open(args[1]) if len(args) > 1 else sys.stdin)
field = re.fullmatch(r"\\.(\\w+)", args[0]) if args else None
out = doc.get(field.group(1)) if field and isinstance(doc, dict) else doc
print(out if raw and isinstance(out, str) else json.dumps(out))
"""
_TIMEOUT_S = 30


@dataclass
class Sandbox:
    """Where a runbook command runs: a directory with ``.dev`` (the test's credentials and the
    operator's settings), ``bridge`` (the repo's) and ``.venv``, natscli and the venv's scripts
    first on PATH, the contexts in a private config home."""

    cwd: Path
    env: dict[str, str]
    logs: list[Path]
    url: str

    def run(self, command: RunbookCommand, *, replace: dict[str, str] | None = None) -> str:
        text = command.text
        for old, new in {natscli.DEFAULT_URL: self.url, **(replace or {})}.items():
            text = text.replace(old, new)
        before = {log: _size(log) for log in self.logs}
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", text],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # `nats stream get` prints the report's protobuf payload too
            timeout=_TIMEOUT_S,
        )
        assert done.returncode == command.exit_code, (
            f"{command.id}\nexit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        for log, offset in before.items():
            violations = [line for line in _read_from(log, offset) if _VIOLATION in line]
            assert not violations, f"{command.id}: the server logged\n" + "\n".join(violations)
        return done.stdout


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _read_from(path: Path, offset: int) -> list[str]:
    if not path.is_file():
        return []
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", errors="replace").splitlines()


def _mirror(source: Path, target: Path) -> None:
    """``target``: a directory of links to every file of ``source``, with desk-a's files as the
    stand-in's. A real ``desk-c`` of the session's credentials (an earlier test may issue one
    for a server of its own) is left out: this test's server does not know its key."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.name.startswith(STAND_IN):
            continue
        (target / path.name).symlink_to(path)
        if path.name.startswith("desk-a"):
            (target / path.name.replace("desk-a", STAND_IN, 1)).symlink_to(path)


def make_sandbox(
    root: Path, handle: ServerHandle, logs: list[Path], engine: EngineProcess | None = None
) -> Sandbox:
    creds, url = handle.creds, handle.url
    cwd = root / "cwd"
    dev = cwd / ".dev"
    _mirror(creds.pki_dir, dev / "pki")
    _mirror(creds.nkeys_dir, dev / "nkeys")
    (dev / "entitlements.toml").symlink_to(creds.entitlements_file)
    operator = write_client_config(client_settings(handle, role="operator"), dev / "operator.toml")
    (cwd / "bridge").symlink_to(REPO_ROOT / "bridge")
    (cwd / ".venv").symlink_to(sys.prefix)
    config = root / "config"
    natscli.write_contexts(creds, url, home=config / "nats")
    path = [str(natscli.NATS_CLI.parent), str(Path(sys.executable).parent)]
    if shutil.which("jq") is None:
        bin_dir = root / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "jq"
        shim.write_text(f"#!{sys.executable}\n{_JQ_STAND_IN}", encoding="utf-8")
        shim.chmod(0o755)
        path.append(str(bin_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "BRIDGE_"))}
    home = root / "home"
    home.mkdir()
    env.update(
        PATH=os.pathsep.join([*path, env.get("PATH", "")]),
        XDG_CONFIG_HOME=str(config),
        HOME=str(home),
        # natscli waits its whole timeout for the answers to a request whose number of answers
        # it does not know (`micro ping`, peer-remove's look-up): 3 s instead of 5 s.
        NATS_TIMEOUT="3s",
        BRIDGE_CONFIG_FILE=str(operator),
        BRIDGE_NATS_HTTP_PORT=str(urlsplit(handle.monitor_url).port),
    )
    if engine is not None and engine.http_addr is not None:
        env["BRIDGE_HTTP_LISTEN"] = engine.http_addr
    return Sandbox(cwd=cwd, env=env, logs=logs, url=url)


async def _execute_the_runbooks_orders(handle: ServerHandle) -> None:
    """ACC1/ORD-1 and ACC1/ORD-7, market orders that fill against the seeded book; returns
    once both have their final report in EXECUTIONS."""
    settings = client_settings(handle, request_timeout_ms=5000)
    async with BridgeClient(settings) as bridge, bridge.reports(ACCOUNT) as stream:
        for client_order_id in ORDERS:
            order = Order(
                client_order_id=client_order_id,
                account=ACCOUNT,
                symbol="AAPL",
                side=Side.BUY,
                order_type=OrderType.MARKET,
                quantity=Decimal(10),
                time_in_force=TimeInForce.IOC,
            )
            await bridge.submit(order)
        pending = set(ORDERS)
        async with asyncio.timeout(_TIMEOUT_S):
            async for report in stream:
                if report.is_final:
                    pending.discard(report.client_order_id)
                if not pending:
                    break


@pytest.fixture(scope="module")
def server(
    nats_server: ServerHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("runbook-server")
    engine = EngineProcess(
        nats_server,
        engine_id=ENGINE_ID,
        log_file=root / "engine.log",
        env={"BRIDGE_SEED_GENERATION": "1"},
    ).start()
    try:
        asyncio.run(_execute_the_runbooks_orders(nats_server))
        logs = [nats_server.log_file] if nats_server.log_file is not None else []
        yield make_sandbox(root, nats_server, logs, engine)
    finally:
        code = engine.stop()
    assert code == 0, f"engine exited with {code}; log tail:\n{engine.log_tail()}"


@pytest.fixture(scope="module")
def cluster(
    dev_creds: DevCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalNatsCluster, Sandbox]]:
    root = tmp_path_factory.mktemp("runbook-cluster")
    with LocalNatsCluster(dev_creds, name="runbook") as nodes:
        logs = [node.log_file for node in nodes.nodes]
        yield nodes, make_sandbox(root, nodes.handle, logs)


def test_every_listed_command_is_in_a_runbook() -> None:
    listed = [*SKIPPED, *EXIT_CODES]
    unused = [s for s in listed if not any(c.text.startswith(s) for c in COMMANDS)]
    assert not unused, f"entries that match no runbook command: {unused}"
    assert ON_SERVER
    assert ON_CLUSTER
    assert LAST_ON_CLUSTER


@pytest.mark.parametrize("command", ON_SERVER, ids=lambda c: c.id)
def test_single_server_command(server: Sandbox, command: RunbookCommand) -> None:
    server.run(command)


@pytest.mark.parametrize("command", ON_CLUSTER, ids=lambda c: c.id)
def test_cluster_command(
    cluster: tuple[LocalNatsCluster, Sandbox], command: RunbookCommand
) -> None:
    cluster[1].run(command)


async def test_the_cluster_runbook_provisions_what_the_definitions_say(
    cluster: tuple[LocalNatsCluster, Sandbox],
) -> None:
    """After the runbook's natscli commands, provisioning from the definitions changes only
    what cluster.md says natscli cannot do: switch off the buckets' direct gets."""
    nodes, _ = cluster
    nc = await connect_as(nodes.handle.url, nodes.creds, "operator")
    try:
        lines = await provision(nc, replicas=3)
    finally:
        await nc.close()
    direct_off = "updated (allow_direct: True -> False)"
    assert len(lines) == 10, lines  # 4 streams, 2 consumers, 4 buckets
    for line in lines:
        kind, _, outcome = line.partition(": ")
        wanted = direct_off if kind.startswith("kv ") else "up to date"
        assert outcome == wanted, "\n".join(lines)


@pytest.mark.parametrize("command", LAST_ON_CLUSTER, ids=lambda c: c.id)
def test_cluster_command_on_a_stopped_node(
    cluster: tuple[LocalNatsCluster, Sandbox], command: RunbookCommand
) -> None:
    nodes, sandbox = cluster
    stopped = [i for i, node in enumerate(nodes.nodes) if not node.running]
    if not stopped:
        # A node that does not lead the meta group: no election to wait for.
        leader = nodes.wait_meta_leader()
        stopped = [next(i for i in reversed(range(len(nodes.nodes))) if i != leader)]
        nodes.kill(stopped[0])
    nodes.wait_meta_leader()
    gone = nodes.nodes[stopped[0]].name
    assert gone in nodes.meta_peers()
    sandbox.run(command, replace={STOPPED_NODE: gone})
    deadline = time.monotonic() + _TIMEOUT_S
    while gone in nodes.meta_peers():
        assert time.monotonic() < deadline, f"{gone} still in the meta group: {nodes.meta_peers()}"
        time.sleep(0.05)
