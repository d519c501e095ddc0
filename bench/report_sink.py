"""The receiver of the queued rows: ``bridge-bench report-sink`` (``bench/rs/src/sink.rs``), a
Rust child process that subscribes to an account's report subjects (core NATS, as the
orchestrator role) and notes when each order's first final report arrived, on
``CLOCK_MONOTONIC`` (Python's ``time.monotonic_ns()``).

Why a child process: at tens of thousands of orders a second, a nats-py subscription in the
publishing process would spend ~10 us of that process's CPU per report, two reports an order,
and become the bottleneck of the rate it is meant to measure. The sink takes no CPU from the
publisher and its timestamps share the publisher's clock.

``watch()`` subscribes (returned once the server has the subscription); ``finish()`` waits for
every expected order's final report or for a deadline, whichever comes first, and returns
``{client_order_id: monotonic ns of its final report}``. Lines from the child are read by a
thread and handed over through events: no polling.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bench.procs import BenchError, bench_binary
from bridge_dev.server import ServerHandle

START_TIMEOUT = 20.0
ANSWER_TIMEOUT = 10.0
"""Longest wait for the sink to confirm a subscription, or to write its file once told to."""


@dataclass
class Watch:
    """One watch: the sink's id for it and the file it writes its findings to."""

    id: str
    out: Path
    expected: int


class ReportSink:
    """``with ReportSink(handle, work) as sink:`` one sink for a phase (stopped on exit)."""

    def __init__(self, handle: ServerHandle, work: Path) -> None:
        self.handle = handle
        self.work = work
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._counts = itertools.count()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BenchError("report sink not running")
        return self._proc.pid

    def _event(self, key: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(key, threading.Event())

    def start(self) -> None:
        ident = self.handle.creds.identity("orchestrator")
        args = [
            "--url",
            self.handle.url,
            "--ca",
            str(self.handle.creds.ca_file),
            "--cert",
            str(ident.cert_file),
            "--key",
            str(ident.key_file),
            "--seed",
            str(ident.seed_file),
            "--inbox-prefix",
            ident.inbox_prefix,
        ]
        self.work.mkdir(parents=True, exist_ok=True)
        with (self.work / "report-sink.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [str(bench_binary()), "report-sink", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._follow, args=(self._proc.stdout,), daemon=True, name="report-sink"
        )
        self._reader.start()
        if not self._event("ready").wait(START_TIMEOUT) or self._proc.poll() is not None:
            self.stop()
            raise BenchError(f"report sink not ready within {START_TIMEOUT}s; {self._tail()}")

    def _follow(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                words = raw.decode(errors="replace").split()
                if words[:1] == ["ready"]:
                    self._event("ready").set()
                elif len(words) >= 2 and words[0] in ("watching", "done"):
                    self._event(f"{words[0]} {words[1]}").set()
        with self._lock:  # exited: wake every waiter (they check the process)
            for event in self._events.values():
                event.set()

    def _tail(self) -> str:
        text = (self.work / "report-sink.log").read_text(errors="replace")[-2000:]
        return f"log {self.work / 'report-sink.log'}:\n{text}"

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise BenchError(f"report sink is not running; {self._tail()}")
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    async def _answer(self, key: str, timeout: float) -> None:
        if not await asyncio.to_thread(self._event(key).wait, timeout):
            raise BenchError(f"report sink: no '{key}' within {timeout}s; {self._tail()}")
        if self._proc is None or self._proc.poll() is not None:
            raise BenchError(f"report sink exited; {self._tail()}")

    async def watch(self, subject: str, prefix: str, expected: int) -> Watch:
        """Subscribe ``subject``; count final reports of orders whose id starts with
        ``prefix`` until ``expected`` of them are in. Returns once the server has the
        subscription (the sink flushed it), so orders sent after this are all seen."""
        watch = Watch(f"w{next(self._counts)}", self.work / f"finals-{time.time_ns()}", expected)
        self._send(f"watch {watch.id} {subject} {prefix} {expected} {watch.out}")
        await self._answer(f"watching {watch.id}", ANSWER_TIMEOUT)
        return watch

    async def finish(self, watch: Watch, timeout: float) -> dict[str, int]:
        """Wait up to ``timeout`` s for every expected final report; then (or at once, when
        ``timeout`` is 0) stop the watch. ``{client_order_id: CLOCK_MONOTONIC ns}`` of the
        orders whose final report arrived."""
        key = f"done {watch.id}"
        if not await asyncio.to_thread(self._event(key).wait, max(0.0, timeout)):
            self._send(f"end {watch.id}")
            await self._answer(key, ANSWER_TIMEOUT)
        finals: dict[str, int] = {}
        with watch.out.open(encoding="ascii") as lines:
            for line in lines:
                order_id, at = line.split()
                finals[order_id] = int(at)
        watch.out.unlink(missing_ok=True)
        return finals

    def stop(self, timeout: float = 5.0) -> None:
        """Close stdin (the sink's stop signal); SIGTERM, then SIGKILL, if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)

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
