"""Serve ``/healthz``, ``/readyz`` and ``/metrics`` from the orchestrator's process, in one line::

    async with BridgeClient(settings) as bridge:
        async with await serve(bridge, port=9465) as http:   # http.port: the bound port
            ...

* ``/healthz``: 200 while the process (its event loop) runs.
* ``/readyz``: 200 when ``bridge.readiness()`` says ready (connected, and at least one engine
  answered the NATS service ping), else 503; the JSON body says which.
* ``/metrics``: the Prometheus registry (``prometheus_client.REGISTRY`` unless given), in the
  text exposition format.

The server is aiohttp's, on the caller's event loop: the readiness check is the client's own
coroutine, so nothing crosses threads and no second loop exists (prometheus-client's
``start_http_server`` serves from a thread and cannot await the client). It needs the
``observability`` extra (``pip install 'nats-execution-bridge[observability]'``); the trading
client never imports this module. Access logs are off: probes would fill the logs.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from bridge.client import BridgeClient

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "bridge.observability needs aiohttp: install nats-execution-bridge[observability]"
    ) from exc

DEFAULT_PORT = 9465
"""The client's default port (the engine's is 9464)."""


class ObservabilityServer:
    """A running ``/healthz`` + ``/readyz`` + ``/metrics`` server; ``close()`` stops it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        """The bound port (the one the system chose when asked for port 0)."""

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and finish the requests in progress. Idempotent."""
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def app(
    client: BridgeClient,
    *,
    registry: CollectorRegistry = REGISTRY,
    readiness_timeout: float = 0.5,
) -> web.Application:
    """The aiohttp application behind ``serve`` (to mount it in an application of your own)."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        readiness = await client.readiness(timeout=readiness_timeout)
        return web.json_response(readiness.as_dict(), status=200 if readiness.ready else 503)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/metrics", metrics)
    return application


async def serve(
    client: BridgeClient,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    registry: CollectorRegistry = REGISTRY,
    readiness_timeout: float = 0.5,
) -> ObservabilityServer:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` for ``client`` on ``host:port`` (port 0:
    any free port; the returned server's ``port`` says which) until ``close()``.

    ``readiness_timeout``: how long ``/readyz`` waits for engines to answer the service ping
    (keep it below the prober's timeout). ``OSError`` when the address cannot be bound."""
    runner = web.AppRunner(
        app(client, registry=registry, readiness_timeout=readiness_timeout),
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return ObservabilityServer(runner, str(bound[0]), int(bound[1]))
