"""An in-memory ``bridge.transport.Transport``: the client's logic tested without a server.

``FakeTransport`` records what the client sends and answers like NATS would:

* requests go to a responder registered per subject (``respond``), which returns the reply's
  bytes or raises nats-py's error (``NoRespondersError``, ``TimeoutError``, ...); a subject
  without a responder is "no responders", like a server with no engine subscribed; a subject
  that ``hang``s keeps its requests waiting until ``abort_requests`` fails them (as a
  permissions violation leaves a request to a forbidden subject unanswered);
* a ping of the engines' service with a reply subject and no engine subscribed is answered
  "no responders" (status 503), as the server does;
* publishes to ``bridge.v1.orders.queue.*`` and ``.batch.*`` with a reply subject are answered
  as JetStream's ORDERS stream answers them (``FakeOrdersStream``: dedup by ``Nats-Msg-Id``,
  ``max_msgs`` with discard new), unless a scripted behaviour says otherwise (``script``):
  ``drop`` (no answer), ``hold`` (answered on ``release_held()``), ``503`` (no stream
  responded), ``garbage`` (an unreadable answer);
* ``drop_connection()`` / ``restore_connection()`` play a lost and re-established connection
  through the client's ``TransportEvents``; ``server_error(text)`` an ``-ERR`` the server sends
  (nats-py hands it to the error callback in lower case, e.g. a permissions violation).

Answers are delivered on the event loop after the publish returns, as from a socket. Report
streams (JetStream pull consumers) are not simulated: the integration tests cover them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
import nats.js.api
import nkeys
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from bridge import contract
from bridge.config import BridgeSettings
from bridge.transport import (
    MessageHandler,
    NatsTransport,
    StreamState,
    Subscription,
    TransportEvents,
)

Responder = Callable[[bytes, dict[str, str]], bytes]

_ORDERS_PREFIXES = (contract.queue(""), contract.queue_batch(""))
_PING = contract.service_ping(contract.SERVICE_NAME)


def new_user_seed(key: bytes | None = None) -> str:
    """A real NKey user seed ("SU...") of the 32-byte Ed25519 ``key`` (default: a fresh one),
    encoded as the NKeys spec says (what ``nkeys.encode_seed`` does; nkeys 0.2.0, the declared
    floor, does not have it)."""
    prefix = nkeys.PREFIX_BYTE_USER
    raw = bytes([nkeys.PREFIX_BYTE_SEED | prefix >> 5, (31 & prefix) << 3])
    raw += secrets.token_bytes(32) if key is None else key
    raw += nkeys.crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class Sent:
    """One request or publish the client made."""

    subject: str
    data: bytes
    headers: dict[str, str]
    reply: str = ""


@dataclass
class FakeOrdersStream:
    """JetStream's ORDERS as a publisher sees it: dedup by Nats-Msg-Id, discard new when full."""

    max_msgs: int | None = None
    stored: dict[str, int] = field(default_factory=dict)

    def answer(self, headers: dict[str, str]) -> dict[str, object]:
        msg_id = headers.get(contract.HEADER_MSG_ID, "")
        if msg_id in self.stored:
            return {"stream": "ORDERS", "seq": self.stored[msg_id], "duplicate": True}
        if self.max_msgs is not None and len(self.stored) >= self.max_msgs:
            error = {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}
            return {"error": error}
        self.stored[msg_id] = len(self.stored) + 1
        return {"stream": "ORDERS", "seq": self.stored[msg_id]}


class FakeSubscription:
    def __init__(self, subject: str, cb: MessageHandler | None) -> None:
        self._subject = subject
        self.cb = cb
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.active = True

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def pending_msgs(self) -> int:
        return self.queue.qsize()

    async def next_msg(self, timeout: float) -> Msg:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def unsubscribe(self) -> None:
        self.active = False


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


async def _call(cb: MessageHandler, msg: Msg) -> None:
    await cb(msg)


class FakeTransport:
    """In-memory ``Transport``; see the module docstring."""

    def __init__(self) -> None:
        self.responders: dict[str, Responder] = {}
        self.orders = FakeOrdersStream()
        self.script: deque[str] = deque()
        self.sent: list[Sent] = []
        self.connect_failures: deque[BaseException] = deque()
        self.connect_attempts = 0
        self.reconnect_allowed = False
        self.connected = False
        self.published = asyncio.Event()  # set on every publish; a test clears it to wait
        self._events: TransportEvents | None = None
        self._subs: list[FakeSubscription] = []
        self._held: list[tuple[str, bytes, dict[str, str]]] = []
        self._hanging_subjects: set[str] = set()
        self._hanging: list[asyncio.Future[bytes]] = []
        self.waiting = asyncio.Event()  # set when a request starts hanging
        self.closes = 0
        self.settings: BridgeSettings | None = None
        self._inboxes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._msg_client = NatsConnection()

    # -- test controls ----------------------------------------------------------------------

    def respond(self, subject: str, responder: Responder) -> None:
        self.responders[subject] = responder

    def hang(self, subject: str) -> None:
        """Requests to ``subject`` wait for an answer that never comes (see the module)."""
        self._hanging_subjects.add(subject)

    async def server_error(self, text: str) -> None:
        """The server sent ``-ERR '<text>'``: what nats-py 2.16 passes to the error callback."""
        assert self._events is not None
        await self._events.on_error(nats.errors.Error(f"nats: {text.lower()}"))

    def requests(self, subject: str) -> list[Sent]:
        return [s for s in self.sent if s.subject == subject and not s.reply]

    def publishes(self) -> list[Sent]:
        """What went to ORDERS: single queued orders and order batches."""
        return [s for s in self.sent if s.subject.startswith(_ORDERS_PREFIXES)]

    async def drop_connection(self) -> None:
        self.connected = False
        assert self._events is not None
        await self._events.on_disconnected()

    async def restore_connection(self) -> None:
        self.connected = True
        assert self._events is not None
        await self._events.on_reconnected()

    def release_held(self) -> None:
        held, self._held = self._held, []
        for reply, data, headers in held:
            self._deliver(reply, json.dumps(self.orders.answer(headers)).encode(), {})
            del data

    async def settle(self) -> None:
        """Let every delivery scheduled so far run."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    # -- Transport ---------------------------------------------------------------------------

    async def connect(self, settings: BridgeSettings, events: TransportEvents) -> None:
        self.connect_attempts += 1
        if self.connect_failures:
            raise self.connect_failures.popleft()
        self._events = events
        self.settings = settings  # what the client connected with (seed inline, inbox resolved)
        self.connected = True

    def connect_error(self, exc: BaseException) -> bool | None:
        return NatsTransport().connect_error(exc)

    def allow_reconnect(self) -> None:
        self.reconnect_allowed = True

    @property
    def is_connected(self) -> bool:
        return self.connected

    @property
    def connected_server(self) -> str | None:
        return "fake:4222" if self.connected else None

    def new_inbox(self) -> str:
        self._inboxes += 1
        return f"_INBOX.fake.{self._inboxes}"

    async def request(
        self, subject: str, data: bytes, *, timeout: float, headers: dict[str, str]
    ) -> bytes:
        if not self.connected:
            raise nats.errors.ConnectionClosedError
        self.sent.append(Sent(subject, data, dict(headers)))
        if subject in self._hanging_subjects:
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._hanging.append(future)
            self.waiting.set()
            return await future
        responder = self.responders.get(subject)
        if responder is None:
            raise nats.errors.NoRespondersError
        return responder(data, headers)

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        if not self.connected:
            raise nats.errors.ConnectionClosedError
        headers = dict(headers or {})
        self.sent.append(Sent(subject, data, headers, reply))
        self.published.set()
        if reply and subject.startswith(_ORDERS_PREFIXES):
            self._jetstream(reply, data, headers)
        elif reply and subject == _PING and not self._listened(subject):
            self._deliver(reply, b"", {nats.js.api.Header.STATUS: "503"})  # no responders
        else:
            self._deliver(subject, data, headers, reply)

    def _listened(self, subject: str) -> bool:
        return any(sub.active and _matches(sub.subject, subject) for sub in self._subs)

    def _jetstream(self, reply: str, data: bytes, headers: dict[str, str]) -> None:
        behaviour = self.script.popleft() if self.script else "ok"
        if behaviour == "ok":
            self._deliver(reply, json.dumps(self.orders.answer(headers)).encode(), {})
        elif behaviour == "503":
            self._deliver(reply, b"", {nats.js.api.Header.STATUS: "503"})
        elif behaviour == "garbage":
            self._deliver(reply, b"not json", {})
        elif behaviour == "hold":
            self._held.append((reply, data, headers))
        elif behaviour != "drop":
            raise ValueError(f"unknown scripted behaviour {behaviour!r}")

    def _deliver(self, subject: str, data: bytes, headers: dict[str, str], reply: str = "") -> None:
        for sub in self._subs:
            if not sub.active or not _matches(sub.subject, subject):
                continue
            msg = Msg(
                self._msg_client, subject=subject, reply=reply, data=data, headers=headers or None
            )
            if sub.cb is None:
                sub.queue.put_nowait(msg)
                continue
            task = asyncio.get_running_loop().create_task(_call(sub.cb, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def subscribe(
        self,
        subject: str,
        *,
        cb: MessageHandler | None = None,
        pending_msgs_limit: int | None = None,
    ) -> Subscription:
        sub = FakeSubscription(subject, cb)
        self._subs.append(sub)
        return sub

    def abort_requests(self, error: BaseException | None = None) -> None:
        hanging, self._hanging = self._hanging, []
        for future in hanging:
            if not future.done():
                future.set_exception(error or nats.errors.ConnectionReconnectingError())

    async def stream_info(self, stream: str) -> StreamState:
        if stream == contract.kv_stream(contract.CONFIG_KV_BUCKET):
            return StreamState(0, 0, 0)  # an empty config bucket: the client's own settings
        raise NotImplementedError("report streams need a real server (tests/integration)")

    async def watch_stream(
        self, stream: str, subject: str, cb: MessageHandler, heartbeat_s: float
    ) -> FakeSubscription:
        """The runtime configuration watch: nothing is ever written (tests/integration)."""
        return FakeSubscription(subject, cb)

    async def add_consumer(self, stream: str, config: nats.js.api.ConsumerConfig) -> None:
        raise NotImplementedError("report streams need a real server (tests/integration)")

    async def drain(self) -> None:
        await self.close()

    async def close(self) -> None:
        self.closes += 1
        self.connected = False
        if self._events is not None:
            await self._events.on_closed()
