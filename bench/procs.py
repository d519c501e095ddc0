"""Child processes of the benchmark: the Rust baseline servers of ``bench/rs``, and the CPU time
and peak memory of any process the benchmark measures.

A baseline server prints one ``ready ...`` line on stdout once it serves; :class:`RustServer`
waits for that line (a reader thread and an event, no polling sleeps) and closes the server's
stdin to stop it (SIGTERM, then SIGKILL, if it does not exit).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psutil

from bridge_dev.server import REPO_ROOT


class BenchError(RuntimeError):
    """A benchmark could not run as designed (a server did not start, orders were lost...)."""


def bench_binary() -> Path:
    """``BRIDGE_BENCH_BIN`` or ``target/release/bridge-bench`` (the Cargo workspace's)."""
    override = os.environ.get("BRIDGE_BENCH_BIN")
    path = Path(override) if override else REPO_ROOT / "target" / "release" / "bridge-bench"
    if not path.is_file():
        raise BenchError(
            f"{path} not found; build it with `cargo build --release` at the repo root "
            "(./dev setup does this)"
        )
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (all its threads)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def peak_rss_bytes(pid: int) -> int:
    """High-water mark of the resident set (``VmHWM``); current RSS where /proc has no peak;
    0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0  # the process is gone: no figure


def reset_own_peak_rss() -> bool:
    """Restart this process's ``VmHWM`` from its current RSS (Linux >= 4.0, ``clear_refs`` 5),
    so that a peak can be taken per measured interval; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


@dataclass
class CpuMeter:
    """CPU used by this Python process and by other processes over a measured interval.

    ``with CpuMeter({"peer": pid}) as m: ...`` then ``m.per_op_us(count)``. Also this
    process's peak RSS over the interval (``python_peak_rss``; since process start where the
    kernel cannot reset the peak, ``python_peak_is_interval`` False).
    """

    pids: Mapping[str, int | None]
    wall_s: float = 0.0
    python_s: float = 0.0
    others_s: dict[str, float] = field(default_factory=dict)
    python_peak_rss: int = 0
    python_peak_is_interval: bool = False
    _start: tuple[float, float, dict[str, float]] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        others = {k: cpu_seconds(pid) for k, pid in self.pids.items() if pid}
        self.python_peak_is_interval = reset_own_peak_rss()
        self._start = (time.perf_counter(), time.process_time(), others)

    def stop(self) -> None:
        if self._start is None:
            raise BenchError("CpuMeter.stop() before start()")
        wall0, py0, others0 = self._start
        self.wall_s = time.perf_counter() - wall0
        self.python_s = time.process_time() - py0
        self.others_s = {k: cpu_seconds(self.pids[k] or 0) - v for k, v in others0.items()}
        self.python_peak_rss = peak_rss_bytes(os.getpid())

    def per_op_us(self, count: int, who: str = "python") -> float | None:
        """CPU microseconds per operation of this process (``python``) or of ``who``."""
        if count <= 0:
            return None
        seconds = self.python_s if who == "python" else self.others_s.get(who)
        return None if seconds is None else seconds * 1e6 / count


class RustServer:
    """One ``bridge-bench <command>`` child; ``start()`` returns its ready line's argument."""

    def __init__(
        self,
        command: str,
        args: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.args = list(args)
        self.log_file = log_file
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.address = ""
        self.peak_rss: int | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BenchError(f"{self.command} is not running")
        return self._proc.pid

    def start(self, timeout: float = 20.0) -> str:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(bench_binary()), self.command, *self.args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, **self._env},
            )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._follow, args=(self._proc.stdout,), daemon=True, name=self.command
        )
        self._reader.start()
        if not self._ready.wait(timeout) or not self.address:
            code = self._proc.poll()
            self.stop()
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise BenchError(
                f"bridge-bench {self.command} not ready within {timeout}s (exit={code}); "
                f"log {self.log_file}:\n{tail}"
            )
        return self.address

    def _follow(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").strip()
                if not self._ready.is_set() and line.startswith("ready "):
                    self.address = line.removeprefix("ready ").strip()
                    self._ready.set()
        self._ready.set()  # exited before (or after) its ready line: wake the waiter

    def stop(self, timeout: float = 5.0) -> int:
        """Close stdin (the server's stop signal); SIGTERM then SIGKILL if it lingers."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            self.peak_rss = peak_rss_bytes(proc.pid)
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
