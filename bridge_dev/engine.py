"""Start and stop the real engine binary against a local server (demo, tests, benchmarks).

Readiness comes from the engine's own endpoint, not from a sleep: a reader thread follows the
engine's JSON log on stderr, tees it to a log file and learns the HTTP address from the
``http listening`` line (logged before the engine connects; the fixture binds port 0 unless
``BRIDGE_HTTP_LISTEN`` is given). ``start()`` then asks ``/readyz`` until it answers 200
(connected, consumer bound, recovery finished, intake subscribed), bounded by the readiness
deadline and ended early if the process exits. The engine is configured like in production:
its TOML file plus ``BRIDGE_*`` environment variables for the connection.

Before it is ready an engine takes its leases (``engine-rs/src/lease.rs``). A restart after a
kill -9 with the same engine id waits for the killed instance's lease to expire, up to
:func:`lease_wait_limit` seconds, so the readiness deadline leaves room for that wait.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bridge import jetstream
from bridge.config import BridgeSettings
from bridge.security.entitlements import Entitlements
from bridge_dev.pki import DevCredentials
from bridge_dev.server import REPO_ROOT, ServerHandle

ENGINE_DIR = REPO_ROOT / "engine-rs"
CARGO_TARGET = REPO_ROOT / "target"
"""The Cargo workspace's target directory (Cargo.toml at the repo root: engine and bench)."""
DEFAULT_ENGINE_CONFIG = ENGINE_DIR / "config" / "dev.toml"
SEED_GENERATION: str | None = None
"""``seed_generation`` of the engines started without one (None: the config file's). The house's
seeded liquidity is placed once per generation and consumed liquidity stays consumed across
restarts; the test suite sets a fresh generation per test so that each test starts with the
full seed even on a server shared by a module."""
READY_TIMEOUT_S = 30.0
"""Time an engine gets for connecting, recovery and subscribing, on top of any lease wait."""
READY_POLL_S = 0.02
"""Interval between two asks of ``/readyz`` while the engine starts."""
DAY_SESSION_END_BEHIND_S = 60
"""How far behind the moment this module is loaded :data:`DAY_SESSION_END_UTC` is."""


def session_end_behind(now: datetime | None = None) -> str:
    """A ``day_session_end_utc`` that passed :data:`DAY_SESSION_END_BEHIND_S` before ``now``
    (default: the current time): the next session end is then almost 24 hours away."""
    at = (now or datetime.now(UTC)) - timedelta(seconds=DAY_SESSION_END_BEHIND_S)
    return at.astimezone(UTC).strftime("%H:%M:%S")


DAY_SESSION_END_UTC: str | None = session_end_behind()
"""``day_session_end_utc`` of the engines started here whose ``env`` does not set
``BRIDGE_DAY_SESSION_END_UTC`` (None: the config file's, else the engine's default 21:00:00).
DAY is the client's default time in force, so most resting orders of the demo, the tests and
the benchmarks are DAY orders: with a fixed session end, whatever ran across it (a test at
20:59:59 UTC) would see them expire. Set once, when the dev tooling is loaded, to a moment
just behind it, the next session end is almost a day after anything this process starts; a
test of DAY expiry gives its engine its own value."""
HTTP_LISTEN = "127.0.0.1:0"
"""``http_listen`` of the engines started here: any free port (several engines share a host)."""


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status code ``url`` answers a GET with; None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class EngineError(RuntimeError):
    """The engine did not start, or did not stop cleanly (message includes its log tail)."""


def engine_binary() -> Path:
    """``BRIDGE_ENGINE_BIN``, else the release build, else the debug build."""
    override = os.environ.get("BRIDGE_ENGINE_BIN")
    candidates = [Path(override)] if override else []
    candidates += [
        CARGO_TARGET / "release" / "bridge-engine",
        CARGO_TARGET / "debug" / "bridge-engine",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise EngineError(
        "engine binary not found; build it with `cargo build --release` at the repo root "
        "(./dev setup does this)"
    )


def lease_ttl() -> float:
    """The engine lease TTL in seconds: the ``ttl`` (max_age) of the committed definition of
    the ``bridge_leases`` bucket, which the engine reads back from the provisioned bucket."""
    return float(jetstream.load("kv-bridge_leases.json")["ttl"])


def lease_wait_limit() -> float:
    """The longest an engine waits at start-up for another instance's lease to expire (seconds);
    mirrors ``wait_limit`` in ``engine-rs/src/lease.rs``: the TTL plus max(TTL/4, 2 s)."""
    ttl = lease_ttl()
    return ttl + max(ttl / 4, 2.0)


def client_settings(
    handle: ServerHandle,
    role: str = "orchestrator",
    *,
    entitlements: Entitlements | None = None,
    **extra: object,
) -> BridgeSettings:
    """Settings for a ``BridgeClient`` of identity ``role`` (a role name such as the default
    ``orchestrator``, or any identity of ``entitlements``, default the dev file's) against a
    local server, with the identity's own inbox prefix."""
    creds = handle.creds.identity(role, entitlements)
    return BridgeSettings(
        nats_url=handle.url,
        tls_ca_file=handle.creds.ca_file,
        tls_cert_file=creds.cert_file,
        tls_key_file=creds.key_file,
        nkey_seed_file=creds.seed_file,
        inbox_prefix=creds.inbox_prefix,
        **extra,  # type: ignore[arg-type]
    )


def write_client_config(settings: BridgeSettings, path: Path) -> Path:
    """Write the values ``settings`` was given explicitly (secrets aside: the seed goes by file)
    as the TOML file ``BRIDGE_CONFIG_FILE`` names, e.g. for ``examples/orchestrator.py``."""
    values = settings.model_dump(mode="json", exclude_unset=True, exclude={"nkey_seed"})
    # A JSON string or number is a valid TOML basic string / integer.
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by the dev tooling (bridge_dev): the orchestrator's connection to the local\n"
        "# server. Use with BRIDGE_CONFIG_FILE=<this file>.\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    return path


def engine_env(
    url: str, creds: DevCredentials, engine_id: str, entitlements_file: Path | None = None
) -> dict[str, str]:
    """The ``BRIDGE_*`` connection variables of an engine, and its entitlements file (default:
    the dev PKI's resolved ``.dev/entitlements.toml``, the file the dev server renders)."""
    role = creds.role("engine")
    return {
        "BRIDGE_ENTITLEMENTS_FILE": str(entitlements_file or creds.entitlements_file),
        "BRIDGE_NATS_URL": url,
        "BRIDGE_TLS_CA_FILE": str(creds.ca_file),
        "BRIDGE_TLS_CERT_FILE": str(role.cert_file),
        "BRIDGE_TLS_KEY_FILE": str(role.key_file),
        "BRIDGE_NKEY_SEED_FILE": str(role.seed_file),
        "BRIDGE_ENGINE_ID": engine_id,
        "BRIDGE_LOG_FORMAT": "json",
    }


def _field(line: bytes, name: str) -> str | None:
    """One field of a JSON log line, as text (None if the line is not JSON or lacks it)."""
    try:
        value = json.loads(line).get(name)
    except (ValueError, AttributeError):
        return None
    return None if value is None else str(value)


class EngineProcess:
    """One engine process. ``start()`` returns once it is serving; ``stop()`` sends SIGTERM."""

    def __init__(
        self,
        handle: ServerHandle,
        *,
        engine_id: str = "engine-1",
        config_file: Path = DEFAULT_ENGINE_CONFIG,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        binary: Path | None = None,
    ) -> None:
        self.handle = handle
        self.binary = binary
        """The engine binary to run (None: :func:`engine_binary`), e.g. the previous contract's
        (``bridge_dev.compat``)."""
        self.engine_id = engine_id
        self.config_file = config_file
        self.log_file = log_file
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        # Set when the engine logs its HTTP address, or when its log ends (it exited).
        self._listening = threading.Event()
        # Set when the engine logs "engine ready" (or its log ends): `recovered` is known.
        self._ready_line = threading.Event()
        self._ready_seen = False  # the line itself, not the end of the log
        self._reader: threading.Thread | None = None
        self.recovered: int | None = None
        self.http_addr: str | None = None
        """host:port the engine's HTTP endpoints are bound to (known once it started)."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def http_url(self) -> str:
        """Base URL of the engine's HTTP endpoints (``/healthz``, ``/readyz``, ``/metrics``)."""
        if self.http_addr is None:
            raise EngineError("the engine has not logged its HTTP address (not started?)")
        return f"http://{self.http_addr}"

    @property
    def metrics_url(self) -> str:
        return f"{self.http_url}/metrics"

    @property
    def readyz_url(self) -> str:
        return f"{self.http_url}/readyz"

    @property
    def running(self) -> bool:
        """True while the process has not exited (a stopped, SIGSTOPped one still runs)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        """Start the engine and wait until it serves; :class:`EngineError` if it exits first
        (e.g. refused: another engine holds its lease) or is not ready within ``timeout``
        (default: :data:`READY_TIMEOUT_S` plus :func:`lease_wait_limit`)."""
        if timeout is None:
            timeout = READY_TIMEOUT_S + lease_wait_limit()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            engine_env(
                self.handle.url,
                self.handle.creds,
                self.engine_id,
                self.handle.entitlements_file,
            )
        )
        if SEED_GENERATION is not None:
            env["BRIDGE_SEED_GENERATION"] = SEED_GENERATION
        if DAY_SESSION_END_UTC is not None:
            env["BRIDGE_DAY_SESSION_END_UTC"] = DAY_SESSION_END_UTC
        env["BRIDGE_HTTP_LISTEN"] = HTTP_LISTEN
        env.update(self._env)
        self._listening.clear()
        self._ready_line.clear()
        self._ready_seen = False
        self.http_addr = None
        self.recovered = None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [str(self.binary or engine_binary()), "--config", str(self.config_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._reader = threading.Thread(
            target=self._follow, args=(self._proc.stderr,), daemon=True, name="engine-log"
        )
        self._reader.start()
        deadline = time.monotonic() + timeout
        ready = self._listening.wait(timeout) and (
            self._await_ready(deadline) if self.http_addr else self._legacy_ready()
        )
        if not ready:
            exited = not self.running
            try:
                # Its log ended: the process is exiting; take its own exit code.
                code: int | None = self._proc.wait(5 if exited else 0)
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            what = "exited before it was ready" if exited else f"not ready in {timeout:.0f}s"
            raise EngineError(f"engine {what} (exit={code}); log tail:\n" + self.log_tail())
        # The engine logs "engine ready" before /readyz turns 200: the line is in the pipe.
        self._ready_line.wait(5)
        return self

    def _await_ready(self, deadline: float) -> bool:
        """Ask ``/readyz`` until it answers 200 (True), the process exits or the deadline
        passes (False)."""
        if self.http_addr is None:
            return False
        while self.running:
            if http_status(self.readyz_url) == 200:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(READY_POLL_S)
        return False

    def _legacy_ready(self) -> bool:
        """An engine binary without HTTP endpoints (an older build that ``bench.compare_engines``
        measures) logged ``engine ready`` first: that line is its readiness."""
        return self._ready_seen and self.running

    def wait_ready(self, timeout: float) -> None:
        """Wait until ``/readyz`` answers 200 again (e.g. after a reconnect);
        :class:`EngineError` if it does not within ``timeout`` or the process exits."""
        if not self._await_ready(time.monotonic() + timeout):
            raise EngineError(f"engine not ready within {timeout}s; log tail:\n" + self.log_tail())

    def _follow(self, stream: IO[bytes]) -> None:
        with stream, self.log_file.open("ab") as out:
            for line in stream:
                out.write(line)
                out.flush()
                if not self._listening.is_set() and b"http listening" in line:
                    self.http_addr = _field(line, "addr")
                    self._listening.set()
                elif not self._ready_line.is_set() and b"engine ready" in line:
                    try:
                        self.recovered = int(json.loads(line).get("recovered", 0))
                    except (ValueError, TypeError):
                        self.recovered = None
                    self._ready_seen = True
                    self._ready_line.set()
                    self._listening.set()  # an engine without HTTP endpoints: see start()
        # Process ended: wake the waiters so they can report the failure.
        self._listening.set()
        self._ready_line.set()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a clean exit; returns the exit code (SIGKILL after ``timeout``)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        self._join()
        return code

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own (e.g. at a failpoint); its exit code."""
        if self._proc is None:
            raise EngineError("engine was never started")
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"engine still running after {timeout}s") from exc
        self._join()
        return code

    def kill(self) -> None:
        """SIGKILL (crash simulation); idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._join()

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
