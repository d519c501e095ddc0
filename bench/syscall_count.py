"""fsync and fdatasync calls of a running process, counted with ``strace -c``.

``SyscallCounter(pid, out).start()`` runs ``strace -c -f -e trace=fsync,fdatasync -o OUT -p
PID`` and returns once strace reports the process (all its threads: ``-f`` with ``-p``)
attached; ``stop()`` sends strace SIGINT, which detaches it (the process keeps running) and
makes it write its summary, and returns the counts. strace stops the traced process at every
system call, not only the counted ones, so the process runs slower while attached: the counts
are exact, the rates of such a run are not what the system does untraced.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bench.procs import BenchError

SYSCALLS = ("fsync", "fdatasync")
ATTACH_TIMEOUT = 20.0


def strace_binary() -> str:
    found = shutil.which("strace")
    if found is None:
        raise BenchError(
            "strace not found: `./dev bench-fsyncs` installs it (apt-get install strace)"
        )
    return found


def parse_summary(text: str) -> dict[str, int]:
    """Calls per syscall of ``SYSCALLS`` from ``strace -c`` output (0 for those absent)::

    % time     seconds  usecs/call     calls    errors syscall
    ------ ----------- ----------- --------- --------- ----------------
    100.00    0.004725         100        47           fdatasync
    """
    counts = dict.fromkeys(SYSCALLS, 0)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1] in counts and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


class SyscallCounter:
    """``with SyscallCounter(pid, out) as c: ...`` then ``c.counts`` (detached on exit)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.counts: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._attached = threading.Event()
        self._stderr: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                strace_binary(),
                "-c",
                "-f",
                "-e",
                "trace=" + ",".join(SYSCALLS),
                "-o",
                str(self.out),
                "-p",
                str(self.pid),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._reader = threading.Thread(
            target=self._follow, args=(self._proc.stderr,), daemon=True, name="strace"
        )
        self._reader.start()
        if not self._attached.wait(ATTACH_TIMEOUT) or self._proc.poll() is not None:
            proc, self._proc = self._proc, None
            proc.kill()  # never attached: nothing to detach, no summary to read
            proc.wait()
            raise BenchError(
                f"strace did not attach to pid {self.pid}: " + " | ".join(self._stderr[-5:])
            )

    def _follow(self, stream: IO[bytes]) -> None:
        # "strace: Process 123 attached" or "... attached with 9 threads" (-f, -p)
        marker = f"Process {self.pid} attached"
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").strip()
                self._stderr.append(line)
                if marker in line:
                    self._attached.set()
        self._attached.set()  # strace exited: wake the waiter

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """Detach (SIGINT to strace) and return the counts of its summary."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.counts
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"strace on pid {self.pid} did not detach within {timeout}s") from None
        if self._reader is not None:
            self._reader.join(timeout)
        try:
            self.counts = parse_summary(self.out.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise BenchError(f"strace wrote no summary ({exc}): {self._stderr[-5:]}") from exc
        return self.counts

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
