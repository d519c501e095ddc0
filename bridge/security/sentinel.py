"""The security sentinel (``bridge-sentinel``): every violation ends the connection and alerts.

Two connections, each its own least-privilege identity (mutual TLS + NKey):

* ``sentinel`` (the bridge's account): reads the engines' refusals through its durable consumer
  ``SENTINEL_CONSUMER`` on ALERTS (filter ``ALERTS_ENGINE``) and publishes its own alerts to
  ``alert("sentinel", kind)``;
* ``sentinel-system`` (the server's system account): authentication-failure advisories
  (``SYS_AUTH_ERROR``), connection lookups (``SYS_CONNZ``) and kicks (``sys_kick``).

Sources and what each triggers:

* an authentication-failure advisory: an alert (the server already closed the connection);
* the server's log (``server_log_file``, followed from its end): a ``TLS handshake error`` is an
  alert (the server already closed the connection); a ``Publish/Subscription Violation`` is
  looked up by connection id, kicked, and alerted;
* an engine's refusal: every open connection of the signer's NKey is kicked, and the sentinel
  alerts with the refusal's id in ``caused_by``; the refusal is acked once handled.

Each alert is one ERROR log line, a ``SecurityAlert`` on the ALERTS stream and, if
``alert_webhook_url`` is set, an Alertmanager-format webhook POST (queued: a slow receiver never
delays the next detection). Readiness: ``sentinel ready`` is logged, and written to
``--ready-file``, once every subscription is confirmed by the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import ssl
import sys
import time
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import nats
import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from bridge import contract
from bridge.logs import configure_logging, get_logger
from bridge.security import alerts, violations
from bridge.security import entitlements as ent
from bridge.security import sys_events as ev
from bridge.security.log_follower import LogFollower, follow
from bridge.security.sentinel_config import SentinelSettings
from bridge.security.server_log import LogViolation, parse_line
from bridge.security.sys_api import Found, SysApi
from bridge.security.webhook import WebhookSender
from bridge.v1 import security_pb2 as pb

log = get_logger("bridge.security.sentinel")

READY = "ready"
MAX_HANDLERS = 64
"""Events handled at once; the sources wait when this many are in progress (bounded memory)."""
_SEEN_LIMIT = 10_000
_FETCH_WAIT_S = 5.0
_PERMISSION_KINDS = (
    pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH,
    pb.SECURITY_VIOLATION_KIND_FORBIDDEN_SUBSCRIBE,
)
_TLS_KINDS = (
    pb.SECURITY_VIOLATION_KIND_NO_CLIENT_CERTIFICATE,
    pb.SECURITY_VIOLATION_KIND_UNTRUSTED_CERTIFICATE,
)


def _tls(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if ca is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


class _Recent:
    """A bounded set of recently seen keys, each forgotten after ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: OrderedDict[object, float] = OrderedDict()

    def seen(self, key: object) -> bool:
        """True if ``key`` was seen within the window; records it either way."""
        if self.window_s <= 0:
            return False
        now = time.monotonic()
        while self._seen and (
            len(self._seen) > _SEEN_LIMIT or next(iter(self._seen.values())) < now - self.window_s
        ):
            self._seen.popitem(last=False)
        hit = key in self._seen and self._seen[key] >= now - self.window_s
        self._seen[key] = now
        self._seen.move_to_end(key)
        return hit


class Sentinel:
    """The service: :meth:`start`, then :meth:`run` until ``stop`` is set, then :meth:`close`."""

    def __init__(self, settings: SentinelSettings) -> None:
        self.settings = settings
        entitlements = ent.load(settings.entitlements_file) if settings.entitlements_file else None
        self.directory = violations.Directory(entitlements)
        self._nc = Client()
        self._sys_nc = Client()
        self._js: JetStreamContext | None = None
        self._sys: SysApi | None = None
        self._refusals: JetStreamContext.PullSubscription | None = None
        self._follower: LogFollower | None = None
        self._webhook: WebhookSender | None = None
        self._slots = asyncio.Semaphore(MAX_HANDLERS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent = _Recent(settings.duplicate_window_ms / 1000)
        self._handled_refusals = _Recent(24 * 3600.0)
        self.alerts_raised = 0
        self._closing = False

    # ----------------------------------------------------------------- lifecycle

    async def _connect(
        self, nc: Client, name: str, cert: Path | None, key: Path | None, seed: Path, inbox: str
    ) -> None:
        s = self.settings

        async def on_error(exc: Exception) -> None:
            log.error("connection error", connection=name, error=str(exc))

        async def on_disconnected() -> None:
            if not self._closing:
                log.warning("disconnected", connection=name)

        async def on_reconnected() -> None:
            log.info("reconnected", connection=name, server=nc.connected_url)

        await nc.connect(
            servers=[u.strip() for u in s.nats_url.split(",") if u.strip()],
            tls=_tls(s.tls_ca_file, cert, key),
            nkeys_seed=str(seed),
            inbox_prefix=inbox,
            name=name,
            max_reconnect_attempts=-1,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )

    async def start(self) -> None:
        """Connect both identities, subscribe to every source and confirm each with the server."""
        s = self.settings
        await self._connect(
            self._nc,
            "bridge-sentinel",
            s.tls_cert_file,
            s.tls_key_file,
            s.nkey_seed_file,
            s.inbox_prefix,
        )
        await self._connect(
            self._sys_nc,
            "bridge-sentinel-system",
            s.system_tls_cert_file,
            s.system_tls_key_file,
            s.system_nkey_seed_file,
            s.system_inbox_prefix,
        )
        self._sys = SysApi(self._sys_nc, timeout_s=s.sys_request_timeout_ms / 1000)
        await self._sys_nc.subscribe(contract.SYS_AUTH_ERROR, cb=self._on_auth_error)
        await self._sys_nc.flush()
        self._js = self._nc.jetstream(timeout=s.alert_publish_timeout_ms / 1000)
        # Fails here, not later, if the consumer is missing or not ours to read.
        await self._js.consumer_info(contract.ALERTS_STREAM, contract.SENTINEL_CONSUMER)
        self._refusals = await self._js.pull_subscribe_bind(
            contract.SENTINEL_CONSUMER, stream=contract.ALERTS_STREAM
        )
        await self._nc.flush()
        if s.server_log_file is not None:
            self._follower = LogFollower(
                s.server_log_file,
                max_read_bytes=s.log_max_read_bytes,
                max_line_bytes=s.log_max_line_bytes,
            )
            self._follower.start()
        if s.alert_webhook_url:
            self._webhook = WebhookSender(
                s.alert_webhook_url,
                receiver=s.webhook_receiver,
                timeout_s=s.webhook_timeout_ms / 1000,
                max_attempts=s.webhook_retry_max_attempts,
                initial_delay_s=s.webhook_retry_initial_delay_ms / 1000,
                max_delay_s=s.webhook_retry_max_delay_ms / 1000,
                queue_size=s.webhook_queue_size,
            )
            await self._webhook.start()
        servers = await self._sys.discover()
        log.info(
            "sentinel ready",
            servers=sorted(servers),
            server_log_file=str(s.server_log_file or ""),
            webhook=bool(s.alert_webhook_url),
            identities=len(self.directory.entitlements.identities)
            if self.directory.entitlements
            else 0,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve every source until ``stop`` is set (or a source fails)."""
        sources = [self._follow_refusals(stop)]
        if self._follower is not None:
            sources.append(self._follow_log(stop))
        tasks = [asyncio.ensure_future(c) for c in sources]
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = None if task is stopper else task.exception()
                if failure is not None:
                    raise failure
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Finish the events in progress (up to ``timeout_s``), deliver queued webhooks, close."""
        self._closing = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in self._tasks:
            task.cancel()
        if self._webhook is not None:
            await self._webhook.close(timeout_s)
        if self._follower is not None:
            self._follower.close()
        for nc in (self._nc, self._sys_nc):
            if nc.is_connected:
                with contextlib.suppress(Exception):
                    await nc.drain()
            await nc.close()

    # ----------------------------------------------------------------- sources

    async def _spawn(self, handler: Coroutine[Any, Any, None]) -> None:
        """Run one event's handler as a task; waits while :data:`MAX_HANDLERS` are running."""
        await self._slots.acquire()

        async def guarded() -> None:
            try:
                await handler
            except Exception as exc:  # one event's failure must not stop the sentinel
                log.exception("event handling failed", error=str(exc))
            finally:
                self._slots.release()

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_auth_error(self, msg: Msg) -> None:
        try:
            event = ev.parse_auth_error(msg.data)
        except ev.SysMessageError as exc:
            log.warning("unreadable auth error advisory", subject=msg.subject, error=str(exc))
            return
        if self._recent.seen(("auth", event.server.id, event.client.id)):
            return
        await self._spawn(self._raise(violations.from_auth_error(event, self.directory)))

    async def _follow_log(self, stop: asyncio.Event) -> None:
        assert self._follower is not None
        interval = self.settings.log_poll_interval_ms / 1000
        async for lines in follow(self._follower, poll_interval=interval, stop=stop):
            for line in lines:
                violation = parse_line(line)
                if violation is not None:
                    await self._on_log_violation(violation)

    async def _on_log_violation(self, v: LogViolation) -> None:
        if v.kind == pb.SECURITY_VIOLATION_KIND_AUTHENTICATION_FAILED:
            return  # the server's advisory reports it, with more detail
        if self._recent.seen((v.kind, v.remote_address, v.cid, v.subject)):
            log.warning(
                "repeated violation within the duplicate window: not alerted again",
                kind=alerts.kind_token(v.kind),
                cid=v.cid,
                subject=v.subject,
            )
            return
        if v.kind in _TLS_KINDS:
            # The log is one server's; name it when the sentinel knows of only one.
            known = self._sys.known_servers if self._sys is not None else set()
            server_id = next(iter(known)) if len(known) == 1 else ""
            await self._spawn(self._raise(violations.from_tls(v, server_id)))
        elif v.kind in _PERMISSION_KINDS:
            await self._spawn(self._on_permission_violation(v))

    async def _on_permission_violation(self, v: LogViolation) -> None:
        assert self._sys is not None
        found = await self._sys.find_connection(v.cid, host=v.host, port=v.port)
        if found is None:
            action = violations.NOT_FOUND
        elif found.conn.closed:
            action = f"connection already closed ({found.conn.reason or 'no reason given'})"
        else:
            error = await self._sys.kick(found.server_id, found.conn.cid)
            action = violations.kick_action([(found, error)])
        await self._raise(violations.from_permission(v, found, action, self.directory))

    async def _follow_refusals(self, stop: asyncio.Event) -> None:
        assert self._refusals is not None
        while not stop.is_set():
            try:
                msgs = await self._refusals.fetch(1, timeout=_FETCH_WAIT_S)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except nats.errors.Error as exc:
                log.warning("fetching engine refusals failed", error=str(exc))
                await asyncio.sleep(self.settings.log_poll_interval_ms / 1000)
                continue
            for msg in msgs:
                await self._spawn(self._on_refusal(msg))

    async def _on_refusal(self, msg: Msg) -> None:
        assert self._sys is not None
        refusal = pb.SecurityAlert()
        try:
            refusal.ParseFromString(msg.data)
        except DecodeError as exc:
            log.error("unreadable engine alert: dropped", subject=msg.subject, error=str(exc))
            await msg.term()
            return
        if refusal.alert_id and self._handled_refusals.seen(refusal.alert_id):
            await msg.ack()  # a redelivery of one already handled
            return
        found: list[Found] = await self._sys.find_user(refusal.nkey) if refusal.nkey else []
        results = [(f, await self._sys.kick(f.server_id, f.conn.cid)) for f in found]
        await self._raise(violations.from_engine(refusal, results, self.directory))
        await msg.ack()

    # ----------------------------------------------------------------- alerting

    async def _raise(self, alert: pb.SecurityAlert) -> None:
        """ERROR line, ALERTS stream, webhook: in that order, each independent of the others."""
        self.alerts_raised += 1
        log.error("security violation: " + alerts.describe(alert), **alerts.log_fields(alert))
        if self._webhook is not None:
            self._webhook.submit(alert)
        assert self._js is not None
        try:
            await self._js.publish(
                alerts.subject_of(alert),
                alert.SerializeToString(),
                headers={contract.HEADER_MSG_ID: alert.alert_id},
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.error(
                "alert not stored on ALERTS (logged and sent to the webhook only)",
                alert_id=alert.alert_id,
                error=str(exc) or type(exc).__name__,
            )


# --------------------------------------------------------------------------- CLI


def _write_ready(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(READY + "\n", encoding="utf-8")
    os.replace(tmp, path)


async def serve(settings: SentinelSettings, ready_file: Path | None = None) -> None:
    """Run the sentinel until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sentinel = Sentinel(settings)
    try:
        await sentinel.start()
        if ready_file is not None:
            _write_ready(ready_file)
        await sentinel.run(stop)
    finally:
        await sentinel.close()
        log.info("sentinel stopped", alerts=sentinel.alerts_raised)


def main(argv: Sequence[str] | None = None) -> int:
    """``bridge-sentinel``: settings from ``BRIDGE_SENTINEL_*`` (and the TOML file
    ``BRIDGE_SENTINEL_CONFIG_FILE`` names)."""
    parser = argparse.ArgumentParser(
        prog="bridge-sentinel",
        description="Kick and alert on every security violation (see README, Security model).",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write 'ready' to this file once every source is subscribed",
    )
    parser.add_argument(
        "--log-format", choices=("json", "console"), default=None, help="default: json if not a tty"
    )
    args = parser.parse_args(argv)
    try:
        settings = SentinelSettings()  # required fields: from the environment or TOML
    except (ValidationError, FileNotFoundError) as exc:
        print(f"bridge-sentinel: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_level, json=None if args.log_format is None else args.log_format == "json"
    )
    try:
        asyncio.run(serve(settings, args.ready_file))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.error("sentinel failed", error=str(exc) or type(exc).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
