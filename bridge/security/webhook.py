"""Deliver alerts to an Alertmanager-format webhook, never holding up detection.

:meth:`WebhookSender.submit` only enqueues (a full queue drops the alert from the webhook with
an ERROR line: it is still on the ALERTS stream); one worker task POSTs what is queued, up to
``max_batch`` alerts per body, retrying a failed POST (connection error, timeout, HTTP 5xx or
429) with exponential backoff up to ``max_attempts`` attempts (tenacity). Other HTTP errors are
not retried: the receiver refused the body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import anyio.lowlevel  # httpx's own async backend (a dependency of httpx)
import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from bridge.logs import get_logger
from bridge.security import alertmanager
from bridge.v1 import security_pb2 as pb

log = get_logger("bridge.security.webhook")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RetryableStatusError(RuntimeError):
    """The receiver answered with a status worth another attempt."""


class WebhookSender:
    """A queue and one worker POSTing alerts to ``url``."""

    def __init__(
        self,
        url: str,
        *,
        receiver: str = "bridge-sentinel",
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        initial_delay_s: float = 0.2,
        max_delay_s: float = 5.0,
        queue_size: int = 1000,
        max_batch: int = 50,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if max_attempts < 1 or queue_size < 1 or max_batch < 1:
            raise ValueError("max_attempts, queue_size and max_batch must be at least 1")
        self.url = url
        self.receiver = receiver
        self.max_attempts = max_attempts
        self.initial_delay_s = initial_delay_s
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self._queue: asyncio.Queue[pb.SecurityAlert] = asyncio.Queue(maxsize=queue_size)
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        """Alerts the receiver accepted."""
        self.failed = 0
        """Alerts given up on (attempts exhausted or refused)."""
        self.dropped = 0
        """Alerts not queued because the queue was full."""

    async def start(self) -> None:
        """Start the worker. httpx's first request imports its async backend (anyio), ~80 ms
        of a blocked event loop; that is done here, before the first violation, not during."""
        await anyio.lowlevel.checkpoint()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook")

    def submit(self, alert: pb.SecurityAlert) -> bool:
        """Queue one alert for delivery; False (and an ERROR line) if the queue is full."""
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error(
                "webhook queue full: alert not sent to the webhook (it is on ALERTS)",
                alert_id=alert.alert_id,
                dropped=self.dropped,
            )
            return False
        return True

    async def close(self, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to ``drain_timeout_s``), then stop the worker."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_client:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.deliver(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def deliver(self, batch: Sequence[pb.SecurityAlert]) -> bool:
        """POST one batch, with retries; True if the receiver accepted it."""
        body = alertmanager.payload(batch, self.receiver).to_json()
        ids = [a.alert_id for a in batch]
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.initial_delay_s, max=self.max_delay_s),
            retry=retry_if_exception_type((httpx.TransportError, RetryableStatusError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(body)
        except (httpx.HTTPError, RetryableStatusError) as exc:
            self.failed += len(batch)
            log.error(
                "webhook delivery failed",
                url=self.url,
                alert_ids=ids,
                attempts=retrying.statistics.get("attempt_number", 0),
                error=str(exc) or type(exc).__name__,
            )
            return False
        self.delivered += len(batch)
        log.info("webhook delivered", alert_ids=ids)
        return True

    async def _post(self, body: bytes) -> None:
        response = await self._client.post(
            self.url, content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code in _RETRYABLE_STATUS:
            raise RetryableStatusError(f"HTTP {response.status_code}")
        response.raise_for_status()
