"""Start and stop the security sentinel (``bridge-sentinel``) against a local server.

Like :mod:`bridge_dev.engine`: the sentinel runs as a child process configured as in production
(``BRIDGE_SENTINEL_*`` variables: the ``sentinel`` and ``sentinel-system`` identities' certificates
and seeds, the resolved entitlements, and the server's log file that
:class:`bridge_dev.server.LocalNatsServer` writes). A reader thread tees its JSON log (stderr)
to a file, keeps every line, and wakes waiters: :meth:`SentinelProcess.start` returns when the
sentinel logs ``sentinel ready`` (every subscription confirmed by the server), and tests wait
for the lines they check with :meth:`SentinelProcess.wait_for_line`. No sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from bridge_dev.server import ServerHandle

READY_TIMEOUT_S = 30.0
READY_MESSAGE = "sentinel ready"

LogLine = dict[str, Any]


class SentinelError(RuntimeError):
    """The sentinel did not start or stop cleanly (message includes its log tail)."""


def sentinel_env(
    handle: ServerHandle, *, webhook_url: str | None = None, log_level: str = "INFO"
) -> dict[str, str]:
    """The ``BRIDGE_SENTINEL_*`` variables of a sentinel against ``handle``'s server."""
    creds = handle.creds
    bridge = creds.identity("sentinel")
    system = creds.identity("sentinel-system")
    entitlements = handle.entitlements_file or creds.entitlements_file
    env = {
        "BRIDGE_SENTINEL_NATS_URL": handle.url,
        "BRIDGE_SENTINEL_TLS_CA_FILE": str(creds.ca_file),
        "BRIDGE_SENTINEL_TLS_CERT_FILE": str(bridge.cert_file),
        "BRIDGE_SENTINEL_TLS_KEY_FILE": str(bridge.key_file),
        "BRIDGE_SENTINEL_NKEY_SEED_FILE": str(bridge.seed_file),
        "BRIDGE_SENTINEL_INBOX_PREFIX": bridge.inbox_prefix,
        "BRIDGE_SENTINEL_SYSTEM_TLS_CERT_FILE": str(system.cert_file),
        "BRIDGE_SENTINEL_SYSTEM_TLS_KEY_FILE": str(system.key_file),
        "BRIDGE_SENTINEL_SYSTEM_NKEY_SEED_FILE": str(system.seed_file),
        "BRIDGE_SENTINEL_SYSTEM_INBOX_PREFIX": system.inbox_prefix,
        "BRIDGE_SENTINEL_ENTITLEMENTS_FILE": str(entitlements),
        "BRIDGE_SENTINEL_LOG_LEVEL": log_level,
    }
    if handle.log_file is not None:
        env["BRIDGE_SENTINEL_SERVER_LOG_FILE"] = str(handle.log_file)
    if webhook_url is not None:
        env["BRIDGE_SENTINEL_ALERT_WEBHOOK_URL"] = webhook_url
    return env


class SentinelProcess:
    """One sentinel process. ``start()`` returns once it is ready; ``stop()`` sends SIGTERM."""

    def __init__(
        self,
        handle: ServerHandle,
        *,
        log_file: Path,
        webhook_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if handle.log_file is None:
            raise SentinelError("the sentinel needs the server's log file (a local server)")
        self.handle = handle
        self.log_file = log_file
        self.webhook_url = webhook_url
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()
        self._lines: list[LogLine] = []
        self._ended = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = READY_TIMEOUT_S) -> Self:
        """Start the sentinel and wait for ``sentinel ready``; SentinelError if it exits first
        or is not ready within ``timeout``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(sentinel_env(self.handle, webhook_url=self.webhook_url, log_level="DEBUG"))
        env.update(self._env)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self._changed:
            self._lines.clear()
            self._ended = False
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.security.sentinel", "--log-format", "json"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._reader = threading.Thread(
            target=self._follow, args=(self._proc.stderr,), daemon=True, name="sentinel-log"
        )
        self._reader.start()
        ready = self.wait_for_line(lambda line: line.get("message") == READY_MESSAGE, timeout)
        if ready is None:
            code = self._proc.poll()
            self.kill()
            what = "exited before it was ready" if code is not None else "not ready in time"
            raise SentinelError(f"sentinel {what} (exit={code}); log tail:\n{self.log_tail()}")
        return self

    def _follow(self, stream: IO[bytes]) -> None:
        with stream, self.log_file.open("ab") as out:
            for raw in stream:
                out.write(raw)
                out.flush()
                try:
                    line = json.loads(raw)
                except ValueError:
                    line = {"message": raw.decode("utf-8", errors="replace").rstrip()}
                if not isinstance(line, dict):
                    line = {"message": str(line)}
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def lines(self) -> list[LogLine]:
        """Every log line so far (decoded JSON)."""
        with self._changed:
            return list(self._lines)

    def wait_for_line(self, predicate: Callable[[LogLine], bool], timeout: float) -> LogLine | None:
        """The first log line (so far or to come) that satisfies ``predicate``; None if the
        process ends or ``timeout`` passes first. Blocking: from async code use
        ``asyncio.to_thread``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a clean exit; the exit code (SIGKILL after ``timeout``)."""
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

    def kill(self) -> None:
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
