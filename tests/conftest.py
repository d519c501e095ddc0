"""Shared pytest fixtures: dev credentials and a real, provisioned nats-server.

``nats_server`` runs the committed ``nats/server.conf`` plus the accounts rendered from the
session's resolved dev entitlements: in Docker when an engine answers a ping (testcontainers'
NATS module with the locally built image bridge-nats:dev, :mod:`bridge_dev.nats_container`),
else as the pip-installed nats-server binary (:class:`bridge_dev.server.LocalNatsServer`). The
header of the pytest run says which and why. It always stops what it started.

The dev tooling (``bridge_dev``) is imported by the fixtures that use it, not here: the unit
tests (``tests/unit``) run without it, and without its dependencies, in the minimum-versions
environment of ``./dev test``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import os
import sys
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bridge.config import BridgeSettings
    from bridge.jetstream.provision import Projections
    from bridge_dev.engine import EngineProcess
    from bridge_dev.pki import DevCredentials
    from bridge_dev.server import LocalNatsServer, ServerHandle

UNIT_TESTS = Path(__file__).resolve().parent / "unit"

# The sentinel tests' checks live in a helper module: keep pytest's assertion messages there.
pytest.register_assert_rewrite("tests.integration.sentinel_harness")


@pytest.fixture(scope="session")
def dev_creds(tmp_path_factory: pytest.TempPathFactory) -> DevCredentials:
    """Dev CA, server/client certificates and NKeys in a per-session temp dir."""
    from bridge_dev.pki import ensure_dev_credentials

    return ensure_dev_credentials(tmp_path_factory.mktemp("pki"))


def _docker_available() -> bool:
    """True only if a Docker engine answers a ping within a couple of seconds."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    with warnings.catch_warnings():
        # docker-py leaks its socket when the engine does not answer; keep that
        # ResourceWarning (an error under filterwarnings=error) inside the probe.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            docker = importlib.import_module("docker")  # untyped SDK, only needed here
            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # no SDK, no daemon, no permission: use the local binary
            return False
        finally:
            gc.collect()


@functools.cache
def _nats_path() -> tuple[str, str]:
    """Which nats-server the ``nats_server`` fixture runs, and why (decided once a session).

    ``BRIDGE_TEST_NATS=docker|local`` forces one; otherwise Docker (testcontainers' NATS module,
    image bridge-nats:dev) when an engine answers a ping, else the local binary."""
    forced = os.environ.get("BRIDGE_TEST_NATS", "")
    if forced == "local":
        return "local", "BRIDGE_TEST_NATS=local"
    if _docker_available():
        return "docker", "a Docker engine answers"
    if forced == "docker":
        raise pytest.UsageError("BRIDGE_TEST_NATS=docker, but no Docker engine answers")
    return "local", "no Docker engine answers (DOCKER_HOST, /var/run/docker.sock)"


def pytest_report_header() -> str:
    path, why = _nats_path()
    what = (
        "Docker (testcontainers NatsContainer, image bridge-nats:dev, host network)"
        if path == "docker"
        else "local nats-server binary (bridge_dev.server.LocalNatsServer)"
    )
    return f"nats_server fixture: {what}: {why}"


@contextmanager
def _nats_in_docker(creds: DevCredentials, config_dir: Path) -> Iterator[ServerHandle]:
    from bridge_dev.nats_container import nats_in_docker

    with nats_in_docker(creds, config_dir) as handle:
        yield handle


@contextmanager
def _nats_local(creds: DevCredentials, _config_dir: Path) -> Iterator[ServerHandle]:
    from bridge_dev.server import LocalNatsServer

    with LocalNatsServer(creds, name="bridge-test") as server:
        yield server.handle


async def _provision(handle: ServerHandle, projections: Projections = "async") -> list[str]:
    from bridge_dev.provision import provision
    from bridge_dev.server import connect_as

    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        return await provision(nc, projections=projections)
    finally:
        await nc.close()


def provisioned_server(
    dev_creds: DevCredentials,
    tmp_path_factory: pytest.TempPathFactory,
    projections: Projections = "async",
) -> Iterator[ServerHandle]:
    """A running nats-server with streams, consumer and KV provisioned; ``projections`` as
    ``bridge provision`` takes it (``fsync``: like a deployment upgraded from contract 1.1)."""
    runner = _nats_in_docker if _nats_path()[0] == "docker" else _nats_local
    with runner(dev_creds, tmp_path_factory.mktemp("nats-config")) as handle:
        # Provision on a private event loop in a worker thread so it never touches the
        # loops pytest-asyncio manages for the tests.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _provision(handle, projections)).result(timeout=30)
        yield handle


@pytest.fixture(scope="module")
def nats_server(
    dev_creds: DevCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """A running nats-server with streams, consumer and KV provisioned (one per module)."""
    yield from provisioned_server(dev_creds, tmp_path_factory)


@pytest.fixture(autouse=True)
def _fresh_house_liquidity(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's engines place the full seeded liquidity (a new seed generation), even on a
    server an earlier test of the module has traded on; restarts within the test keep it.
    Unit tests start no engine."""
    if UNIT_TESTS in request.path.parents:
        return
    from bridge_dev import engine as dev_engine

    monkeypatch.setattr(dev_engine, "SEED_GENERATION", uuid.uuid4().hex[:8])


@pytest.fixture
def engine(nats_server: ServerHandle, tmp_path: Path) -> Iterator[EngineProcess]:
    """The real engine binary, serving; on teardown it must stop cleanly (exit 0)."""
    from bridge_dev.engine import EngineProcess

    proc = EngineProcess(nats_server, log_file=tmp_path / "engine.log").start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, f"engine exited with {code}; log tail:\n{proc.log_tail()}"


@pytest.fixture
def engine_1_0(nats_server: ServerHandle, tmp_path: Path) -> Iterator[EngineProcess]:
    """The contract 1.0 engine (``target/release/bridge-engine-1-0``, built by ./dev setup from
    the release commit, with that commit's dev config; ``bridge_dev.compat``), serving; on
    teardown it must stop cleanly (exit 0)."""
    from bridge_dev import compat
    from bridge_dev.engine import EngineProcess

    proc = EngineProcess(
        nats_server,
        binary=compat.engine_binary(),
        config_file=compat.ENGINE_CONFIG,
        log_file=tmp_path / "engine-1.0.log",
    ).start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, f"1.0 engine exited with {code}; log tail:\n{proc.log_tail()}"


@pytest.fixture
def settings(nats_server: ServerHandle) -> BridgeSettings:
    """Orchestrator settings for the module's server (short timeouts keep failures quick)."""
    from bridge_dev.engine import client_settings

    return client_settings(nats_server, request_timeout_ms=5000)


@pytest.fixture
def fresh_server(
    dev_creds: DevCredentials, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[LocalNatsServer]:
    """A provisioned nats-server of its own, for tests that kill, pause or reconfigure it.

    ``@pytest.mark.projections("fsync")`` provisions EXECUTIONS and the order store persisted
    per message: an engine then rides out a server restart (with the default, asynchronous
    persistence it stops at the reconnect and its restart repairs them; runbooks/journal.md)."""
    from bridge_dev.server import LocalNatsServer

    marker = request.node.get_closest_marker("projections")
    projections: Projections = "fsync" if marker and marker.args == ("fsync",) else "async"
    server = LocalNatsServer(dev_creds, name="bridge-fault", log_file=tmp_path / "nats.log")
    with server:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _provision(server.handle, projections)).result(timeout=30)
        yield server


@pytest.fixture(autouse=True)
def _collect_transports_of_failed_connects() -> Iterator[None]:
    """Collect, inside each test, what nats-py leaks when a connection attempt fails.

    nats-py 2.16 does not close the TLS transport of a connect or reconnect attempt that fails
    (a killed or frozen server, a refused certificate); it is garbage-collected later with a
    ResourceWarning, which under ``filterwarnings = error`` fails whichever unrelated test
    happens to be running then (seen in tests/integration/test_security.py when this ran after
    the fault tests only). The bridge's own connections are all closed; these leftovers are
    the library's, so they are collected here, quietly, after every test.
    """
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the security violation tests and the fault-injection tests measured."""
    _sentinel_summary(terminalreporter)
    _fault_summary(terminalreporter)


def _sentinel_summary(tr: pytest.TerminalReporter) -> None:
    """Violation kind -> refused, connection gone / alert / webhook after (ms), executed
    (tests/integration/test_sentinel.py and test_sentinel_engine.py, which record it in
    tests/integration/sentinel_harness.py)."""
    module = sys.modules.get("tests.integration.sentinel_harness")  # imported if they ran
    if module is None or not module.RESULTS:
        return
    tr.section("security violations: refused, connection closed / alert received after, executed")
    tr.write_line(
        f"{'violation':<40} {'refused':>7} {'closed_ms':>9} {'alert_ms':>8} {'webhook_ms':>10} "
        f"{'executed':>8}"
    )

    def ms(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    for r in module.RESULTS:
        tr.write_line(
            f"{r.kind:<40} {'yes' if r.refused else 'NO':>7} {ms(r.closed_after_ms):>9} "
            f"{ms(r.alert_after_ms):>8} {ms(r.webhook_after_ms):>10} {r.executed:>8}"
        )


def _fault_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the fault-injection tests measured (tests/faults/harness.py)."""
    harness = sys.modules.get("tests.faults.harness")  # imported only if fault tests ran
    if harness is None or not harness.RESULTS:
        return
    results = harness.RESULTS
    tr = terminalreporter
    tr.section("fault injection: orders sent / acked / lost / duplicated, recovery")
    tr.write_line(
        f"{'fault':<44} {'sent':>6} {'acked':>6} {'lost':>5} {'dup':>4} {'over':>5} "
        f"{'refused':>7} {'recovery_s':>10}  notes"
    )
    for r in results:
        rec = f"{r.recovery_s:.3f}" if r.recovery_s is not None else "-"
        notes = ", ".join(f"{k}={v}" for k, v in r.notes.items())
        tr.write_line(
            f"{r.fault:<44} {r.sent:>6} {r.acked:>6} {r.lost:>5} {r.duplicated:>4} "
            f"{r.overfilled:>5} {r.refused:>7} {rec:>10}  {notes}"
        )
