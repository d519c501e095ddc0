"""Which contract every running engine speaks, asked once and cached (N-1 for order batches).

A message type that came with a later contract than some engine speaks must not reach that
engine: an engine of 1.0 or 1.1 pulls every message of the ORDERS consumer, and would take an
``OrderBatch`` (contract 1.2) for a malformed order. So the queued path sends batches only when
every engine that answers the NATS service ping (``$SRV.PING.bridge-engine``, each instance's
metadata ``contract_version``, absent = 1.0: ``bridge._versions.engine_contract``, the same
reading as ``UnsupportedOperationError``'s) speaks 1.2 or later, and one message per order
otherwise.

``discover`` publishes one ping and collects the answers: until the server says nobody listens
(no responders, at once), or ``QUIET_S`` (at least; ``QUIET_FACTOR`` times the first answer's
delay when that is longer) after the last answer, at most ``WINDOW_S`` after the ping.
``EngineContracts`` keeps the answer: the first queued operation of a connection waits for it;
after ``TTL_S`` the next operation starts a new discovery in the background and keeps using the
last answer until it is in. A dropped connection forgets it (asked again after a reconnect);
closing the client cancels a discovery under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import nats.errors
import nats.js.api

from bridge import _versions, contract
from bridge._connection import Connection
from bridge._readiness import instance_id
from bridge.logs import get_logger
from bridge.transport import Transport

log = get_logger("bridge.client")

BATCH_CONTRACT = "1.2"
"""The contract that brought ``OrderBatch``: batches go only to engines that all speak it."""
WINDOW_S = 0.5
"""A discovery ends at the latest this long after its ping."""
QUIET_S = 0.02
"""... and this long after the last answer (or ``QUIET_FACTOR`` times the first one's delay)."""
QUIET_FACTOR = 4.0
TTL_S = 10.0
"""An answer older than this is asked again (in the background)."""
MAX_ANSWERS = 1024
_NO_RESPONDERS = "503"


@dataclass(frozen=True, slots=True)
class Engines:
    """The engines that answered one discovery: (engine id, contract version) each, sorted."""

    engines: tuple[tuple[str, str], ...]

    def all_speak(self, version: str) -> bool:
        """At least one engine answered, and every one speaks ``version`` or later."""
        want = _versions.parse(version) or (1, 0)
        return bool(self.engines) and all(
            (_versions.parse(v) or (1, 0)) >= want for _, v in self.engines
        )


async def discover(transport: Transport) -> Engines:
    """Ping the engines' service once; every distinct engine's contract (see the module)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + WINDOW_S
    found: dict[str, tuple[str, str]] = {}  # instance id -> (engine id, contract)
    inbox = transport.new_inbox()
    sub = await transport.subscribe(inbox)
    try:
        await transport.publish(contract.service_ping(contract.SERVICE_NAME), b"", reply=inbox)
        quiet_until = deadline
        for _ in range(MAX_ANSWERS):
            remaining = min(deadline, quiet_until) - loop.time()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                break
            if msg.headers and msg.headers.get(nats.js.api.Header.STATUS) == _NO_RESPONDERS:
                break  # nobody listens: no engine is up
            engine = _versions.engine_contract(msg.data)
            if engine is None:
                continue
            now = loop.time()
            if not found:
                quiet = max(QUIET_S, QUIET_FACTOR * (now - started))
            # Per service instance: two engines configured with one engine id both count.
            found[instance_id(msg.data) or engine[0]] = engine
            quiet_until = now + quiet
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return Engines(tuple(sorted(found.values())))


class EngineContracts:
    """One client's cached answer of ``discover`` (see the module)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._known: Engines | None = None
        self._speaks: dict[str, bool] = {}  # version -> the last answer's all_speak (per call)
        self._at = 0.0
        self._asking: asyncio.Task[None] | None = None
        conn.on_drop(self.forget)

    @property
    def known(self) -> Engines | None:
        """The last answer (None before the first, or after the connection dropped)."""
        return self._known

    def forget(self) -> None:
        """Ask again before the next queued operation (the connection dropped)."""
        self._known = None
        self._speaks = {}

    async def all_speak(self, version: str) -> bool:
        """Does every running engine speak ``version`` or later? (see the module)"""
        if self._known is None:
            await self._ask()
        elif time.monotonic() - self._at > TTL_S and self._asking is None:
            self._asking = asyncio.get_running_loop().create_task(self._refresh())
        known = self._known
        if known is None:
            return False
        speaks = self._speaks.get(version)
        if speaks is None:
            speaks = self._speaks[version] = known.all_speak(version)
        return speaks

    async def _ask(self) -> None:
        """Wait for a discovery (one at a time: a second caller waits for the first's)."""
        if self._asking is None:
            self._asking = asyncio.get_running_loop().create_task(self._refresh())
        await asyncio.shield(self._asking)

    async def _refresh(self) -> None:
        try:
            transport = self._conn.open()
            engines = await discover(transport)
        except (nats.errors.Error, TimeoutError) as exc:
            log.info("bridge.engine_discovery_failed", error=repr(exc))
            engines = Engines(())
        except Exception as exc:  # a closed client: nothing to decide for
            log.debug("bridge.engine_discovery_skipped", error=repr(exc))
            return
        finally:
            self._asking = None
        changed = self._known != engines
        self._known, self._at = engines, time.monotonic()
        self._speaks = {}
        if changed:
            log.info(
                "bridge.engine_contracts",
                engines=[f"{e}={v}" for e, v in engines.engines],
                batches=engines.all_speak(BATCH_CONTRACT),
            )

    def close(self) -> None:
        """Stop a discovery under way (the client is closing)."""
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None
