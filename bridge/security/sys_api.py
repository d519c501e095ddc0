"""The few ``$SYS`` requests the sentinel makes, over its system-account connection.

* Connection lookups go to ``SYS_CONNZ`` (every server answers), with ``auth=true`` so the
  reply names each connection's user (its NKey), account and certificate subject. Replies are
  collected until every server known so far has answered (or the timeout), so a cluster is
  searched whole; a lookup of one connection id stops at the first connection that matches
  (the id and, when known, the client's address: connection ids are per server).
* A kick goes to ``sys_kick(server_id)`` of the server that holds the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge import contract
from bridge.logs import get_logger
from bridge.security import sys_events as ev

log = get_logger("bridge.security.sys_api")

DISCOVERY_GRACE_S = 0.1
"""After the first server's reply, how long discovery waits for the other servers'."""


@dataclass(frozen=True)
class Found:
    """A connection and the server that holds it."""

    server_id: str
    conn: ev.ConnInfo


StopRule = Callable[[list[Found], set[str]], bool]
"""``(found, replied) -> bool``: whether a lookup has what it needs."""


class SysApi:
    """Connection lookups and kicks through one system-account connection."""

    def __init__(self, nc: Client, *, timeout_s: float) -> None:
        self._nc = nc
        self.timeout_s = timeout_s
        self.known_servers: set[str] = set()
        """Servers that answered a lookup (a cluster's members, as far as seen)."""

    async def discover(self) -> set[str]:
        """Learn the servers (the first reply, then :data:`DISCOVERY_GRACE_S` for more)."""
        body = ev.connz_request(limit=1)
        await self._collect(body, stop=lambda _found, replied: bool(replied), grace=True)
        return set(self.known_servers)

    async def find_connection(self, cid: int, *, host: str = "", port: int = 0) -> Found | None:
        """The connection ``cid`` (open or recently closed), matched on its address if given."""

        def matches(conn: ev.ConnInfo) -> bool:
            return (
                conn.cid == cid
                and (not host or conn.ip == host)
                and (not port or conn.port == port)
            )

        found = await self._collect(
            ev.connz_request(cid=cid, state=ev.CONN_STATE_ALL),
            stop=lambda found, _replied: any(matches(f.conn) for f in found),
        )
        hits = [f for f in found if matches(f.conn)]
        # An open connection beats a closed one with the same id (a reused id on a restart).
        hits.sort(key=lambda f: f.conn.closed)
        return hits[0] if hits else None

    async def find_user(self, user: str) -> list[Found]:
        """Every open connection authenticated as ``user`` (a public NKey), on every server."""
        found = await self._collect(ev.connz_request(user=user), stop=None)
        return [f for f in found if f.conn.authorized_user == user and not f.conn.closed]

    async def kick(self, server_id: str, cid: int) -> str | None:
        """Disconnect connection ``cid`` of ``server_id``: None if done, else the server's error."""
        try:
            msg = await self._nc.request(
                contract.sys_kick(server_id), ev.kick_request(cid), timeout=self.timeout_s
            )
        except TimeoutError:
            return f"no reply from server {server_id} within {self.timeout_s:.1f}s"
        reply = ev.parse_reply(msg.data)
        if reply.error is not None:
            return reply.error.description or f"error {reply.error.code}"
        return None

    async def _collect(
        self,
        body: bytes,
        *,
        stop: StopRule | None,
        grace: bool = False,
    ) -> list[Found]:
        """Send one connz request to every server and gather replies until ``stop`` says so,
        every known server answered, or the timeout."""
        inbox = self._nc.new_inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def put(msg: Msg) -> None:
            queue.put_nowait(msg)

        sub = await self._nc.subscribe(inbox, cb=put)
        found: list[Found] = []
        replied: set[str] = set()
        deadline = time.monotonic() + self.timeout_s
        try:
            await self._nc.publish(contract.SYS_CONNZ, body, reply=inbox)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    msg = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                self._take(msg, found, replied)
                if stop is not None and stop(found, replied):
                    if grace:
                        deadline = min(deadline, time.monotonic() + DISCOVERY_GRACE_S)
                        stop = None
                        continue
                    break
                if self.known_servers and self.known_servers <= replied and not grace:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return found

    def _take(self, msg: Msg, found: list[Found], replied: set[str]) -> None:
        try:
            reply = ev.parse_reply(msg.data)
            conns = ev.connections(reply)
        except ev.SysMessageError as exc:
            log.warning("unreadable connz reply", error=str(exc))
            return
        server_id = reply.server.id
        if server_id:
            replied.add(server_id)
            self.known_servers.add(server_id)
        found.extend(Found(server_id, conn) for conn in conns)
