"""A counting limit whose size changes at run time: the queued pipeline's ``max_inflight``.

Like ``asyncio.Semaphore`` (FIFO waiters; a waiter cancelled after it was granted a slot gives it
back) but ``resize(n)`` changes the capacity while slots are taken: growing it hands slots to
waiters at once; shrinking it takes nothing back, so publishes in flight finish and new ones wait
until the count is below the new capacity.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """``capacity`` slots; ``taken`` of them in use."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.taken = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        """No slot free now (``acquire`` would wait)."""
        return self.taken >= self.capacity or bool(self._waiters)

    async def acquire(self) -> None:
        if not self.locked():
            self.taken += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just before the cancellation: give it back
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.taken -= 1
        self._wake()

    def resize(self, capacity: int) -> None:
        """New capacity; slots in use stay taken until released."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.taken < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.taken += 1
                waiter.set_result(None)
