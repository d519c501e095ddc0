"""Follow a growing log file like ``tail -F``: new complete lines, bounded, across rotation.

:class:`LogFollower` starts at the file's end (what was logged before the sentinel started is
history, not an event), and on each :meth:`LogFollower.poll` returns the complete lines appended
since, reading at most ``max_read_bytes``. It copes with:

* truncation in place (``copytruncate``, ``: > file``): the size drops below the read position,
  so it reads again from the start;
* rotation by rename (``mv nats.log nats.log.1`` then a new ``nats.log``; nats-server's own
  ``logfile_size_limit`` does this): the name points to another inode; the rest of the old file
  is read first, then the new file from its start;
* a file that does not exist yet, or disappears for a while: it is opened once it (re)appears,
  from its start if it was created after the follower started.

A line longer than ``max_line_bytes`` is dropped (counted in :attr:`LogFollower.overlong`),
so a hostile line cannot grow memory. :func:`follow` is the asyncio loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

DEFAULT_MAX_READ_BYTES = 1 << 20
DEFAULT_MAX_LINE_BYTES = 64 << 10


class LogFollower:
    """Reads the lines appended to ``path`` (not thread-safe; one reader)."""

    def __init__(
        self,
        path: Path,
        *,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        if max_read_bytes <= 0 or max_line_bytes <= 0:
            raise ValueError("max_read_bytes and max_line_bytes must be positive")
        self.path = path
        self.max_read_bytes = max_read_bytes
        self.max_line_bytes = max_line_bytes
        self.overlong = 0
        """Lines dropped for being longer than ``max_line_bytes``."""
        self.reopened = 0
        """Times the file was found rotated or truncated."""
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._pos = 0
        self._partial = bytearray()
        self._discarding = False  # inside an overlong line: drop until its newline
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Position at the file's current end (or wait for the file to appear)."""
        self._started = True
        self._open(at_end=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LogFollower:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def position(self) -> int:
        """Bytes of the current file consumed so far."""
        return self._pos

    def _open(self, *, at_end: bool) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        self._fd = fd
        self._ino = (st.st_dev, st.st_ino)
        self._pos = os.lseek(fd, 0, os.SEEK_END) if at_end else 0
        self._partial.clear()
        self._discarding = False
        return True

    # ----------------------------------------------------------------- reading

    def poll(self) -> list[str]:
        """The complete lines appended since the last poll (at most ``max_read_bytes`` read)."""
        if not self._started:
            self.start()
        if self._fd is None and not self._open(at_end=False):
            return []
        budget = self.max_read_bytes
        lines, budget = self._read(budget)
        if budget > 0:
            switched = self._check_replaced()
            if switched:
                more, _ = self._read(budget)
                lines += more
        return lines

    def _check_replaced(self) -> bool:
        """After reading the current file to its end: reopen if the name now points to a new
        file (rotation) or the file shrank below the position (truncation)."""
        assert self._fd is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # rotated away and not recreated yet: keep the old one
        if (st.st_dev, st.st_ino) != self._ino:
            self._flush_partial_into_nothing()
            self.close()
            self.reopened += 1
            return self._open(at_end=False)
        if st.st_size < self._pos:
            self.reopened += 1
            self._pos = 0
            self._partial.clear()
            self._discarding = False
            return True
        return False

    def _flush_partial_into_nothing(self) -> None:
        # nats-server ends every line with a newline; an unfinished one in a rotated-away file
        # is a write cut short, not a line.
        self._partial.clear()
        self._discarding = False

    def _read(self, budget: int) -> tuple[list[str], int]:
        assert self._fd is not None
        lines: list[str] = []
        while budget > 0:
            chunk = os.pread(self._fd, min(budget, 64 << 10), self._pos)
            if not chunk:
                break
            self._pos += len(chunk)
            budget -= len(chunk)
            lines += self._split(chunk)
        return lines, budget

    def _split(self, chunk: bytes) -> list[str]:
        lines: list[str] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            piece = chunk[start:end]
            if self._discarding:
                self._discarding = False
            elif len(self._partial) + len(piece) > self.max_line_bytes:
                self.overlong += 1
                self._partial.clear()
            else:
                self._partial += piece
                lines.append(self._partial.decode("utf-8", errors="replace"))
                self._partial.clear()
            start = end + 1
        rest = chunk[start:]
        if not self._discarding and rest:
            if len(self._partial) + len(rest) > self.max_line_bytes:
                self.overlong += 1
                self._partial.clear()
                self._discarding = True
            else:
                self._partial += rest
        return lines


async def follow(
    follower: LogFollower, *, poll_interval: float, stop: asyncio.Event
) -> AsyncIterator[list[str]]:
    """Batches of new lines until ``stop`` is set; waits ``poll_interval`` only when idle."""
    while not stop.is_set():
        lines = follower.poll()
        if lines:
            yield lines
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_interval)
