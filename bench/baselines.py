"""Baselines: the same serialized NewOrder through bare transports, closed loop, one at a time.

(a1) nats-py core request -> Rust async-nats echo responder (``bridge.v1.orders.submit``,
     orchestrator and engine roles, no engine running on that server);
(a2) nats-py JetStream publish to ORDERS (file storage, fsync always) -> Rust pull consumer on
     the engine's durable consumer, which answers with a core publish on
     ``bridge.v1.exec.BENCH.<msg id>`` (the publisher's role may subscribe there): the floor of
     an order that is durable *and* answered, what the bridge's synchronous ack guarantees;
(c)  grpcio unary call -> Rust tonic echo, mutual TLS with the dev PKI (``grpc.aio`` on the
     event loop, and the blocking stub);
(d)  asyncio TCP ping-pong of length-prefixed frames -> Rust tokio echo, mutual TLS 1.3 (and
     without TLS, for reference).

All use TLS with the same dev CA and certificates as the bridge; the NATS ones run on a
server with the committed ``nats/server.conf`` (same roles and permissions).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio

from bench.measure import Result, closed_loop, closed_loop_blocking
from bench.procs import BenchError
from bench.profile import Budget
from bridge import contract
from bridge_dev.pki import DevCredentials
from bridge_dev.server import ServerHandle, client_ssl_context, connect_as

GRPC_METHOD = "/bridge.bench.v1.OrderEcho/Submit"
JS_REPLY_ACCOUNT = "BENCH"
TIMEOUT = 5.0


def engine_args(handle: ServerHandle) -> list[str]:
    """``bridge-bench`` NATS options: the engine role's mTLS files and NKey seed."""
    role = handle.creds.role("engine")
    return [
        "--url",
        handle.url,
        "--ca",
        str(handle.creds.ca_file),
        "--cert",
        str(role.cert_file),
        "--key",
        str(role.key_file),
        "--seed",
        str(role.seed_file),
        "--inbox-prefix",
        contract.inbox_prefix("engine"),
    ]


def server_tls_args(creds: DevCredentials) -> list[str]:
    """``bridge-bench`` listener options: the dev server certificate and the CA for clients."""
    return [
        "--ca",
        str(creds.ca_file),
        "--cert",
        str(creds.server_cert),
        "--key",
        str(creds.server_key),
    ]


async def nats_request(
    handle: ServerHandle, peer_pid: int, budget: Budget, payload: bytes, loop: str
) -> Result:
    """(a1) ``nc.request`` on the submit subject of account BENCH, answered by the Rust echo
    (which serves every account's, like the engines)."""
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    subject = contract.submit(JS_REPLY_ACCOUNT)

    async def one(_: int) -> None:
        reply = await nc.request(subject, payload, timeout=TIMEOUT)
        if reply.data != payload:
            raise BenchError("nats echo answered with different bytes")

    try:
        timed = await closed_loop(one, budget, {"peer": peer_pid, "nats": handle.pid})
    finally:
        await nc.close()
    return Result.latency(
        timed,
        id=f"baseline.a1.nats_request.{loop}",
        label="(a1) NATS request -> async-nats echo",
        group="baseline",
        loop=loop,
        notes="core NATS, not durable",
    )


async def js_publish_answered(
    handle: ServerHandle, peer_pid: int, budget: Budget, payload: bytes, run: str, loop: str
) -> Result:
    """(a2) ``js.publish`` to ORDERS, then the consumer's answer: done when both the PubAck
    (stored and fsynced) and the answer from the Rust consumer have arrived."""
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    js = nc.jetstream(timeout=TIMEOUT)
    sub = await nc.subscribe(contract.executions_for_account(JS_REPLY_ACCOUNT))
    await nc.flush()
    subject = contract.queue(JS_REPLY_ACCOUNT)

    async def one(i: int) -> None:
        msg_id = f"{run}j-{i:07d}"
        await js.publish(subject, payload, headers={contract.HEADER_MSG_ID: msg_id})
        answer = await sub.next_msg(timeout=TIMEOUT)
        if not answer.subject.endswith(msg_id) or answer.data != payload:
            raise BenchError(f"JetStream consumer answered {answer.subject} for {msg_id}")

    try:
        timed = await closed_loop(one, budget, {"peer": peer_pid, "nats": handle.pid})
    finally:
        await nc.close()
    return Result.latency(
        timed,
        id=f"baseline.a2.js_answered.{loop}",
        label="(a2) JetStream publish -> consumer answer",
        group="baseline",
        loop=loop,
        notes="durable (file, fsync)",
    )


def grpc_credentials(creds: DevCredentials) -> grpc.ChannelCredentials:
    role = creds.role("orchestrator")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(creds.ca_file).read_bytes(),
        private_key=Path(role.key_file).read_bytes(),
        certificate_chain=Path(role.cert_file).read_bytes(),
    )


async def grpc_aio(
    address: str, tls: grpc.ChannelCredentials, peer_pid: int, budget: Budget, payload: bytes
) -> Result:
    """(c) grpc.aio unary call with the NewOrder bytes (no (de)serializer: bytes as they are)."""
    async with grpc.aio.secure_channel(address, tls) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_METHOD)

        async def one(_: int) -> None:
            if await call(payload, timeout=TIMEOUT) != payload:
                raise BenchError("gRPC echo answered with different bytes")

        timed = await closed_loop(one, budget, {"peer": peer_pid})
    return Result.latency(
        timed,
        id="baseline.c.grpc_aio",
        label="(c) gRPC grpc.aio unary -> tonic echo",
        group="baseline",
        notes="not durable",
    )


def grpc_blocking(
    address: str, tls: grpc.ChannelCredentials, peer_pid: int, budget: Budget, payload: bytes
) -> Result:
    """(c') the same call through grpcio's blocking stub (no event loop)."""
    with grpc.secure_channel(address, tls) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_METHOD)

        def one(_: int) -> None:
            if call(payload, timeout=TIMEOUT) != payload:
                raise BenchError("gRPC echo answered with different bytes")

        timed = closed_loop_blocking(one, budget, {"peer": peer_pid})
    return Result.latency(
        timed,
        id="baseline.c.grpc_blocking",
        label="(c') gRPC blocking unary -> tonic echo",
        group="baseline",
        loop="-",
        notes="not durable",
    )


async def tcp_ping_pong(
    address: str,
    creds: DevCredentials | None,
    peer_pid: int,
    budget: Budget,
    payload: bytes,
    loop: str,
) -> Result:
    """(d) u32 length + payload, echoed; TLS 1.3 with the orchestrator's client certificate
    unless ``creds`` is None."""
    host, port = address.rsplit(":", 1)
    ctx = None
    if creds is not None:
        role = creds.role("orchestrator")
        ctx = client_ssl_context(creds.ca_file, role.cert_file, role.key_file)
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=ctx, server_hostname=host if ctx else None
    )
    frame = struct.pack(">I", len(payload)) + payload

    async def one(_: int) -> None:
        writer.write(frame)
        await writer.drain()
        (n,) = struct.unpack(">I", await reader.readexactly(4))
        if await reader.readexactly(n) != payload:
            raise BenchError("TCP echo answered with different bytes")

    try:
        timed = await closed_loop(one, budget, {"peer": peer_pid})
    finally:
        writer.close()
        await writer.wait_closed()
    tls = creds is not None
    return Result.latency(
        timed,
        id=f"baseline.d.tcp{'_tls' if tls else '_plain'}.{loop}",
        label=f"(d) TCP ping-pong -> tokio echo{', mTLS 1.3' if tls else ', no TLS'}",
        group="baseline",
        loop=loop,
        notes="not durable",
    )


def disk_fsync(directory: Path, budget: Budget) -> Result:
    """Context, not a transport: one 512-byte append + fsync on the filesystem of the JetStream
    stores, the unit of work every durable write waits for (``sync_interval: always``)."""
    return _disk_append(
        directory,
        budget,
        os.fsync,
        id="context.disk_fsync",
        label="(ctx) disk: 512 B append + fsync",
        notes="what each JetStream write waits for",
    )


def disk_fdatasync(directory: Path, budget: Budget) -> Result:
    """One 512-byte append + fdatasync in ``directory`` (the bridge server's store directory),
    measured in the bridge phase beside the synchronous rows, so that a missed ack goal can be
    set against what the disk itself takes at p50 / p99 / p99.9 in the same run."""
    return _disk_append(
        directory,
        budget,
        os.fdatasync,
        id="context.disk_fdatasync",
        label="(ctx) disk: 512 B append + fdatasync",
        notes="in the store's directory, same phase as the sync rows",
    )


def _disk_append(
    directory: Path,
    budget: Budget,
    sync: Callable[[int], None],
    *,
    id: str,
    label: str,
    notes: str,
) -> Result:
    block = b"\0" * 512
    probe = directory / "fsync-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def one(_: int) -> None:
        os.write(fd, block)
        sync(fd)

    try:
        timed = closed_loop_blocking(one, budget, {})
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    return Result.latency(
        timed, id=id, label=label, group="baseline", loop="-", notes=notes, costs=False
    )
