"""Every retry and backoff decision of the client, in one place.

Backoff (same formula and knob names as the engine's ``engine-rs/src/retry.rs``): the n-th
consecutive failure (n = 0, 1, ...) waits ::

    min(reconnect_max_delay_ms, reconnect_initial_delay_ms * 2**n) + uniform(0, reconnect_jitter_ms)

It paces NATS reconnects (nats-py's reconnect hook), the initial connect and request retries.

What is retried (``is_transient``), always with the same client order id / ``Nats-Msg-Id``, so a
retry can never create a second order:

* the engine did not answer in time (``OutcomeUnknownError`` from a timeout): a re-send of the
  same order is answered with the original ack if the first one arrived;
* no engine is subscribed (``EngineUnavailableError``, NATS "no responders", e.g. mid-restart);
* JetStream did not confirm, or its stream had no responder (503) (``OutcomeUnknownError``,
  ``PublishError`` with ``transient=True``);
* the NATS connection is down (``ConnectionFailedError``; nothing was sent).

Never retried: validation (``InvalidOrderError``), a full stream (``StreamFullError``), an
engine rejection, authorization or permission errors, protocol errors, a closed client.
Retries stop after ``order_retry_max_attempts`` attempts or once ``order_retry_deadline_ms`` has
passed since the first attempt; the last error is raised.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from bridge.config import BridgeSettings
from bridge.errors import (
    BridgeError,
    ConnectionFailedError,
    EngineUnavailableError,
    OutcomeUnknownError,
    PartialBatchError,
    PublishError,
)
from bridge.logs import get_logger


def backoff_base_ms(initial_delay_ms: int, max_delay_ms: int, failures: int) -> int:
    """The backoff without jitter, in ms: ``min(max_delay_ms, initial_delay_ms * 2**failures)``
    (the formula ``schemas/testdata/backoff.json`` pins for both languages)."""
    return min(max_delay_ms, initial_delay_ms << min(failures, 32))


def backoff_delay(settings: BridgeSettings, failures: int) -> float:
    """Seconds to wait after ``failures`` + 1 consecutive failures (``failures`` >= 0)."""
    capped = backoff_base_ms(
        settings.reconnect_initial_delay_ms, settings.reconnect_max_delay_ms, failures
    )
    jitter = random.uniform(0, settings.reconnect_jitter_ms)  # not crypto: spreads reconnects
    return (capped + jitter) / 1000


def is_transient(exc: BaseException) -> bool:
    """True for failures a re-send of the same order id may cure (see the module docstring);
    for a ``PartialBatchError``, whether re-sending the batch may cure its earliest failure."""
    if isinstance(exc, PartialBatchError):
        return is_transient(exc.failure)
    if isinstance(exc, PublishError):
        return exc.transient
    return isinstance(exc, OutcomeUnknownError | EngineUnavailableError | ConnectionFailedError)


log = get_logger("bridge.retry")


Retried = Callable[[], object]
"""Called once before each retried attempt of an order operation (the client's
``bridge_client_retries_total``)."""


def _log_retry(what: str, on_retry: Retried | None = None) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry()
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "bridge.retrying",
            operation=what,
            attempt=state.attempt_number,
            retry_in_s=round(state.upcoming_sleep, 3),
            error=str(exc),
        )

    return before_sleep


def request_retrying(
    settings: BridgeSettings,
    what: str,
    *,
    done: int = 0,
    elapsed_s: float = 0.0,
    on_retry: Retried | None = None,
) -> AsyncRetrying:
    """The policy for one order operation (submit, enqueue, cancel, status).

    ``done`` attempts already failed outside the policy, ``elapsed_s`` ago in total: they
    count against ``order_retry_max_attempts`` and ``order_retry_deadline_ms``. ``on_retry``
    is called before each retried attempt.
    """
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(max(1, settings.order_retry_max_attempts - done))
        | stop_after_delay(max(0.0, settings.order_retry_deadline_ms / 1000 - elapsed_s)),
        wait=lambda state: backoff_delay(settings, state.attempt_number - 1 + done),
        before_sleep=_log_retry(what, on_retry),
        reraise=True,
    )


def log_first_retry(what: str, exc: BaseException, delay_s: float) -> None:
    """The ``bridge.retrying`` line for a failure that happened before the policy started.

    Like every line logged inside an operation, it carries the operation's ids from the log
    context (``structlog.contextvars``, bound by ``BridgeClient``)."""
    log.warning(
        "bridge.retrying",
        operation=what,
        attempt=1,
        retry_in_s=round(delay_s, 3),
        error=str(exc),
    )


_T = TypeVar("_T")


async def with_retries(
    settings: BridgeSettings,
    what: str,
    op: Callable[[], Awaitable[_T]],
    on_retry: Retried | None = None,
) -> _T:
    """``op`` under the retry policy (same ids on every attempt); ``on_retry`` is called
    before each retried attempt.

    The first attempt runs without the retry machinery (the hot path of every order); only a
    transient failure enters it.
    """
    started = time.monotonic()
    try:
        return await op()
    except BridgeError as exc:
        return await retry_after(settings, what, op, exc, started, on_retry)


async def retry_after(
    settings: BridgeSettings,
    what: str,
    op: Callable[[], Awaitable[_T]],
    failed: BridgeError,
    started: float,
    on_retry: Retried | None = None,
) -> _T:
    """Attempts 2.. of ``op``, whose first attempt (begun at ``started``, monotonic) raised
    ``failed``; re-raises ``failed`` if it is not worth retrying. ``on_retry`` is called before
    each retried attempt."""
    if not is_transient(failed) or settings.order_retry_max_attempts == 1:
        raise failed
    delay = backoff_delay(settings, 0)
    log_first_retry(what, failed, delay)
    if on_retry is not None:
        on_retry()
    await asyncio.sleep(delay)  # the backoff before the second attempt
    elapsed = time.monotonic() - started
    retrying = request_retrying(settings, what, done=1, elapsed_s=elapsed, on_retry=on_retry)
    async for attempt in retrying:
        with attempt:
            return await op()
    raise AssertionError("unreachable: tenacity re-raises the last error")


def connect_retrying(
    settings: BridgeSettings, retry_on: Callable[[BaseException], bool]
) -> AsyncRetrying:
    """The policy of the initial connect: same backoff, bounded by ``connect_deadline_ms`` and,
    if set, ``max_reconnect_attempts``."""
    stop: Any = stop_after_delay(settings.connect_deadline_ms / 1000)
    if settings.max_reconnect_attempts > 0:
        stop = stop | stop_after_attempt(settings.max_reconnect_attempts + 1)
    return AsyncRetrying(
        retry=retry_if_exception(retry_on),
        stop=stop,
        wait=lambda state: backoff_delay(settings, state.attempt_number - 1),
        before_sleep=_log_retry("connect"),
        reraise=True,
    )
