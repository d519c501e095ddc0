"""A 3-node nats-server cluster on loopback (``nats/cluster.conf``): owns ports, start, faults.

Each node is a :class:`bridge_dev.server.LocalNatsServer` with its own store, client,
monitoring and route ports; routes use mutual TLS with the dev server certificate. The
cluster is ready when every node's ``/healthz`` answers 200, i.e. JetStream has a meta leader
and every node is current. Provision it with ``provision(nc, replicas=3)`` for R3 streams.

Fault helpers for tests: :meth:`LocalNatsCluster.kill` (SIGKILL), :meth:`pause` (SIGSTOP, a hung
node), :meth:`restart`, :meth:`stream_leader` (which node leads a stream) and
:meth:`meta_leader` (which leads the JetStream meta group).
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bridge_dev.pki import DevCredentials
from bridge_dev.server import (
    LOCAL_HOST,
    REPO_ROOT,
    LocalNatsServer,
    NatsServerError,
    ServerHandle,
)

CLUSTER_SIZE = 3
_POLL_INTERVAL = 0.05


def cluster_config_file() -> Path:
    return REPO_ROOT / "nats" / "cluster.conf"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback right now (bound together, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in socks:
            s.bind((LOCAL_HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalNatsCluster:
    """Three nats-server child processes forming one JetStream cluster."""

    def __init__(self, creds: DevCredentials, *, name: str = "bridge-cluster") -> None:
        self.creds = creds
        self.name = name
        self._dir = Path(tempfile.mkdtemp(prefix="bridge-nats-cluster-"))
        ports = free_ports(3 * CLUSTER_SIZE)
        client, http, route = (
            ports[:CLUSTER_SIZE],
            ports[CLUSTER_SIZE : 2 * CLUSTER_SIZE],
            ports[2 * CLUSTER_SIZE :],
        )
        routes = {
            f"BRIDGE_NATS_ROUTE_{i + 1}": f"nats-route://{LOCAL_HOST}:{route[i]}"
            for i in range(CLUSTER_SIZE)
        }
        self.nodes = [
            LocalNatsServer(
                creds,
                port=client[i],
                http_port=http[i],
                store_dir=self._dir / f"n{i}" / "store",
                name=f"{name}-n{i}",
                log_file=self._dir / f"n{i}" / "nats-server.log",
                config_file=cluster_config_file(),
                extra_env={
                    "BRIDGE_NATS_CLUSTER_NAME": name,
                    "BRIDGE_NATS_CLUSTER_PORT": str(route[i]),
                    **routes,
                },
            )
            for i in range(CLUSTER_SIZE)
        ]
        self.urls = [f"tls://{LOCAL_HOST}:{p}" for p in client]
        self._monitor = [f"http://{LOCAL_HOST}:{p}" for p in http]

    @property
    def handle(self) -> ServerHandle:
        """A handle whose ``url`` lists every node (clients and engines take the list)."""
        first = self.nodes[0]
        return ServerHandle(
            url=",".join(self.urls),
            monitor_url=self._monitor[0],
            store_dir=first.store_dir,
            creds=self.creds,
            pid=0,
            log_file=first.log_file,
        )

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node, then wait until the whole cluster is healthy."""
        for node in self.nodes:
            node.start(timeout=timeout)
        self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, nodes: list[int] | None = None) -> None:
        """Until ``/healthz`` answers 200 on every (listed) running node."""
        indexes = nodes if nodes is not None else list(range(CLUSTER_SIZE))
        deadline = time.monotonic() + timeout
        pending = set(indexes)
        last = ""
        while pending:
            for i in sorted(pending):
                status, last = _healthz(self._monitor[i])
                if status == 200:
                    pending.discard(i)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"cluster nodes {sorted(pending)} not healthy within {timeout:.0f}s: {last}"
                )
            time.sleep(_POLL_INTERVAL)

    def stream_leader(self, stream: str) -> int:
        """Index of the node leading ``stream`` (from a running node's /jsz)."""
        for i, node in enumerate(self.nodes):
            if not node.running:
                continue
            url = f"{self._monitor[i]}/jsz?streams=true&raft=true"
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    data = json.loads(resp.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            for account in data.get("account_details") or []:
                for st in account.get("stream_detail") or []:
                    leader = (st.get("cluster") or {}).get("leader")
                    if st.get("name") == stream and leader:
                        return self._index_of(leader)
        raise NatsServerError(f"no leader known for stream {stream}")

    def _meta_cluster(self) -> dict[str, Any]:
        """The JetStream meta group as the first running node that knows a leader sees it."""
        for i, node in enumerate(self.nodes):
            if not node.running:
                continue
            try:
                with urllib.request.urlopen(f"{self._monitor[i]}/jsz", timeout=1.0) as resp:
                    meta: dict[str, Any] = json.loads(resp.read()).get("meta_cluster") or {}
            except (urllib.error.URLError, OSError, ValueError):
                continue
            if meta.get("leader"):
                return meta
        return {}

    def meta_leader(self) -> int | None:
        """Index of the JetStream meta leader, as a running node's /jsz names it (None: no
        running node knows one)."""
        leader = self._meta_cluster().get("leader")
        return self._index_of(leader) if leader else None

    def meta_peers(self) -> set[str]:
        """Names of the meta group's members (the leader and its replicas), as a running node
        sees them: a node removed with ``nats server raft peer-remove`` is no longer one."""
        meta = self._meta_cluster()
        names = {r.get("name") for r in meta.get("replicas") or []} | {meta.get("leader")}
        return {name for name in names if name}

    def wait_meta_leader(self, timeout: float = 30.0) -> int:
        """Until a running node leads the JetStream meta group; its index."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.meta_leader()
            if leader is not None and self.nodes[leader].running:
                return leader
            if time.monotonic() > deadline:
                raise NatsServerError(f"no running meta leader within {timeout:.0f}s")
            time.sleep(_POLL_INTERVAL)

    def _index_of(self, server_name: str) -> int:
        for i, node in enumerate(self.nodes):
            if node.name == server_name:
                return i
        raise NatsServerError(f"unknown server {server_name}")

    def reload(self, entitlements_file: Path | None = None, timeout: float = 10.0) -> None:
        """Apply ``entitlements_file`` on every running node (see LocalNatsServer.reload)."""
        for node in self.nodes:
            if node.running:
                node.reload(entitlements_file, timeout=timeout)
            elif entitlements_file is not None:
                node.entitlements_file = entitlements_file

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def pause(self, i: int) -> None:
        self.nodes[i].pause()

    def resume(self, i: int) -> None:
        self.nodes[i].resume()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        self.nodes[i].stop()
        self.nodes[i].start(timeout=timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.cleanup()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _healthz(monitor_url: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz", timeout=1.0) as resp:
            return int(resp.status), "ok"
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:200]
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)
