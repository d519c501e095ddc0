"""A throwaway Prometheus server for the ops integration test (tests/integration/test_ops_live.py).

The binary is the one ``./dev setup`` unpacks from Debian's prometheus package into
``.dev/tools/bin`` (or a ``prometheus`` on PATH). :class:`PrometheusProcess` writes the given
configuration, starts the server on a free loopback port with its storage in a temp directory,
waits for ``/-/ready``, and stops it (SIGTERM, then SIGKILL) on ``stop()``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0
_PORT_ATTEMPTS = 3


class PrometheusError(RuntimeError):
    """The server did not start or did not become ready."""


def prometheus_binary() -> Path | None:
    """The unpacked Debian binary, else one on PATH, else None."""
    local = REPO / ".dev" / "tools" / "bin" / "prometheus"
    if local.is_file():
        return local
    found = shutil.which("prometheus")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class PrometheusProcess:
    """One Prometheus server with ``config`` (prometheus.yml as data) in ``workdir``."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise PrometheusError("no prometheus binary: ./dev setup unpacks one into .dev/tools")
        self.binary = binary
        self.workdir = workdir
        self.config_file = workdir / "prometheus.yml"
        self.log_file = workdir / "prometheus.log"
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = READY_TIMEOUT_S) -> Self:
        """Start it and wait until ``/-/ready`` answers 200; a taken port is tried again."""
        for _ in range(_PORT_ATTEMPTS):
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            with self.log_file.open("ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.binary),
                        f"--config.file={self.config_file}",
                        f"--storage.tsdb.path={self.workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + timeout
            while self._proc.poll() is None and time.monotonic() < deadline:
                if _ready(self.url):
                    return self
                time.sleep(0.1)
            if self._proc.poll() is None:
                self.stop()
                raise PrometheusError(f"not ready within {timeout}s:\n{self.log_tail()}")
            # it exited: most likely the port was taken between choosing and binding it
        raise PrometheusError(f"exited at start {_PORT_ATTEMPTS} times:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL after ``timeout``; idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
