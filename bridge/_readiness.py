"""Readiness: is this client connected, and how many engines answer the NATS service API?

Every engine registers as an instance of the NATS micro service ``contract.SERVICE_NAME``; a
publish on ``contract.service_ping(SERVICE_NAME)`` (``$SRV.PING.bridge-engine``) is answered by
each running instance with a ping response (JSON: ``type``
``io.nats.micro.v1.ping_response``, ``name``, ``id``, ``version``, ``metadata``). ``probe``
publishes one ping, collects the answers for ``timeout`` seconds and counts distinct instance
ids. The orchestrator's identity must be allowed to publish that subject (nats/ and
bridge/security/server_auth.py grant it): a refused publish is a permissions violation, which
closes the client like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats.errors

from bridge import contract
from bridge.logs import get_logger

if TYPE_CHECKING:
    from bridge._connection import Connection

log = get_logger("bridge.client")

MAX_ANSWERS = 1024
"""At most this many ping answers are read per probe (a bound on the loop, not on engines)."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """What ``BridgeClient.readiness()`` found: ``ready`` = connected and at least one engine
    answered the service ping within the timeout."""

    connected: bool
    engines: int
    """Distinct engine instances that answered."""
    engine_ids: tuple[str, ...] = ()
    """Their micro service instance ids, sorted."""

    @property
    def ready(self) -> bool:
        return self.connected and self.engines >= 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what ``/readyz`` answers."""
        return {
            "ready": self.ready,
            "connected": self.connected,
            "engines": self.engines,
            "engine_ids": list(self.engine_ids),
        }


NOT_CONNECTED = Readiness(connected=False, engines=0)


def instance_id(data: bytes) -> str | None:
    """The instance id of a ping answer of ``SERVICE_NAME``, None for anything else."""
    try:
        answer = json.loads(data)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("name") != contract.SERVICE_NAME:
        return None
    found = answer.get("id")
    return found if isinstance(found, str) and found else None


async def probe(conn: Connection, timeout: float) -> Readiness:
    """Ping the engines' service once and count who answers within ``timeout`` seconds."""
    if not conn.is_up:
        return NOT_CONNECTED
    transport = conn.transport
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: set[str] = set()
    try:
        inbox = transport.new_inbox()
        sub = await transport.subscribe(inbox)
    except nats.errors.Error:
        return NOT_CONNECTED
    try:
        await transport.publish(contract.service_ping(contract.SERVICE_NAME), b"", reply=inbox)
        for _ in range(MAX_ANSWERS):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                break
            engine = instance_id(msg.data)
            if engine is not None:
                found.add(engine)
    except nats.errors.Error as exc:  # the connection dropped or closed meanwhile
        log.info("bridge.readiness_failed", error=repr(exc))
        return NOT_CONNECTED
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return Readiness(connected=conn.is_up, engines=len(found), engine_ids=tuple(sorted(found)))
