"""The tests' nats-server in Docker: testcontainers' NATS module running ``bridge-nats:dev``.

The container shares the host's network (``dockerd --bridge=none``: there is no other network,
and all traffic stays on 127.0.0.1), so nothing is port-mapped: the server binds random ports
(``-1``) on 127.0.0.1 and writes them to its ports file (``--ports_file_dir``) in a run directory
mounted from the host, where the fixture reads them, exactly as :class:`LocalNatsServer` does.
Every path the server uses (runtime config, the committed ``nats/``, the PKI, the JetStream store,
its log, the run directory) is mounted at the SAME path as on the host, so the
:class:`~bridge_dev.server.ServerHandle` it yields is the local one's: tests that read the store
or the log, or reload the server (SIGHUP to its host pid), work unchanged. The container runs
as the calling user (it reads the 0600 keys; the store stays the user's).

Ryuk (testcontainers' reaper) is disabled: its image cannot be pulled here. The context manager
removes the container itself, whatever happens.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge_dev import images, nats_config
from bridge_dev.pki import DevCredentials
from bridge_dev.server import (
    LOCAL_HOST,
    LocalNatsServer,
    NatsServerError,
    ServerHandle,
    server_config_file,
    server_env,
)

# Read by testcontainers when it is imported.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

with warnings.catch_warnings():
    # 4.15 deprecates the @wait_container_is_ready that NatsContainer applies at import; the
    # readiness wait is replaced below anyway.
    warnings.simplefilter("ignore", DeprecationWarning)
    from testcontainers.community.nats import NatsContainer

READY_TIMEOUT_S = 20.0
_POLL_S = 0.05
_LOG = "nats-server.log"


class BridgeNatsContainer(NatsContainer):
    """``bridge-nats:dev`` on the host network; ready = ports file written and /healthz 200."""

    def __init__(self, run_dir: Path, timeout: float = READY_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(images.NATS, **kwargs)
        self.ports = {}  # host network: nothing to publish (NatsContainer exposes 4222/8222)
        self.run_dir = run_dir
        self.timeout = timeout
        self.client_url = ""
        self.monitor_url = ""

    def _healthcheck(self) -> None:
        """Instead of NatsContainer's wait for "Server is ready" in the container's output
        (the server logs to a file): the ports file, then /healthz?js-enabled-only=true."""
        deadline = time.monotonic() + self.timeout
        last = "ports file not written yet"
        while True:
            if self.status not in ("created", "running"):
                raise NatsServerError(f"nats container {self.status}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"nats container not healthy within {self.timeout:.0f}s ({last}):\n"
                    f"{self.log_tail()}"
                )
            if not self.monitor_url:
                for ports in self.run_dir.glob("*.ports"):
                    client, monitor = LocalNatsServer._read_ports(ports)
                    if client and monitor:
                        self.client_url, self.monitor_url = client, monitor
            if self.monitor_url:
                status, last = LocalNatsServer._healthz(self.monitor_url)
                if status == 200:
                    return
            time.sleep(_POLL_S)

    @property
    def status(self) -> str:
        container = self.get_wrapped_container()
        container.reload()
        return str(container.status)

    @property
    def host_pid(self) -> int:
        """nats-server's pid on the host (it is PID 1 in the container's own namespace)."""
        container = self.get_wrapped_container()
        container.reload()
        return int(container.attrs["State"]["Pid"])

    def log_tail(self, lines: int = 40) -> str:
        log = self.run_dir / _LOG
        text = log.read_text("utf-8", errors="replace") if log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:]) or "<log empty>"


@functools.cache
def _image_ready() -> None:
    """Build bridge-nats:dev if its inputs changed (once per process: a hash and an inspect)."""
    images.build_all([images.NATS])


@contextmanager
def nats_in_docker(
    creds: DevCredentials, config_dir: Path, *, name: str = "bridge-test"
) -> Iterator[ServerHandle]:
    """A nats-server in ``bridge-nats:dev`` (built first if its inputs changed) running the
    committed config plus the accounts rendered from ``creds``' entitlements into
    ``config_dir``; the container and its store are removed on exit."""
    _image_ready()
    committed = server_config_file()
    entitlements_file = creds.entitlements_file
    nats_config.write_runtime_config(config_dir, committed, entitlements_file)
    run_dir = Path(tempfile.mkdtemp(prefix="bridge-nats-run-"))
    store_dir = Path(tempfile.mkdtemp(prefix="bridge-nats-store-"))
    log_file = run_dir / _LOG
    env = server_env(
        creds, host=LOCAL_HOST, port=-1, http_port=-1, store_dir=str(store_dir), name=name
    )
    container = BridgeNatsContainer(run_dir).with_envs(**env)
    container.with_kwargs(network_mode="host", user=f"{os.getuid()}:{os.getgid()}")
    for path, mode in (
        (committed.parent.resolve(), "ro"),
        (config_dir.resolve(), "ro"),
        (creds.pki_dir.resolve(), "ro"),
        (run_dir, "rw"),
        (store_dir, "rw"),
    ):
        container.with_volume_mapping(path, str(path), mode)
    container.with_command(
        [
            "-c",
            str(config_dir.resolve() / nats_config.RUNTIME_CONFIG),
            "--ports_file_dir",
            str(run_dir),
            "--log",
            str(log_file),
        ]
    )
    try:
        with container:
            yield ServerHandle(
                url=f"tls://{LOCAL_HOST}:{container.client_url.rsplit(':', 1)[1]}",
                monitor_url=container.monitor_url,
                store_dir=store_dir,
                creds=creds,
                pid=container.host_pid,
                log_file=log_file,
                config_dir=config_dir,
                entitlements_file=entitlements_file,
            )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
