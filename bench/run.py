"""``python -m bench [--quick] [--out DIR]``: run every scenario, print and save the results.

Phases, each with its own processes, all stopped before the next phase starts:

1. NATS baselines on a fresh nats-server (committed ``nats/server.conf``, provisioned like
   production; its EXECUTIONS stream is then deleted so that the (a2) consumer's answers on
   ``bridge.v1.exec.BENCH.*`` stay core messages): (a1) request/echo, (a2) durable
   publish/answer.
2. The bridge on another fresh nats-server: (b) raw publish throughput, ``enqueue_batch``
   throughput and (b') raw nats-py publishing of the very messages ``enqueue_batch`` sent, into
   ORDERS (no engine yet), the engine's drain of a backlog, the disk's fdatasync histogram in the
   store's directory, the synchronous path (per event loop; 16 concurrent submitters), the
   queued path end to end with the report sink as receiver (the demo's burst, one publisher's
   drain, the open loop at each offered load).
3. gRPC and TCP baselines (no NATS).
4. Scaling (:mod:`bench.scaling`): 1, 2 and 3 partitioned engines on one nats-server and on the
   3-node cluster (R3): drain orders/s, sync ack latency, CPU per order of every process
   (``--no-scaling`` leaves it out).

Writes ``<out>/latest.json`` and ``<out>/latency.png`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from bench import baselines, bridge_paths, report, scaling
from bench.environment import describe
from bench.measure import Result, merge_throughput, result_from_json
from bench.procs import BenchError, RustServer
from bench.profile import FULL, QUICK, Profile, scenario_ids
from bench.report_sink import ReportSink
from bridge import contract
from bridge.logs import configure_logging
from bridge_dev.pki import DevCredentials, default_root, ensure_dev_credentials
from bridge_dev.provision import provision
from bridge_dev.server import REPO_ROOT, LocalNatsServer, ServerHandle, connect_as

T = TypeVar("T")
RESULTS_DIR = REPO_ROOT / "bench" / "results"
ENGINE_CONFIG = REPO_ROOT / "bench" / "engine.toml"
MIB = 1024 * 1024

METHOD_NOTES = (
    "Every process is local (127.0.0.1) on the same machine; clients and servers share its cores.",
    "All NATS connections use nats/server.conf: mutual TLS 1.3 + NKey per role; JetStream file "
    "storage with sync_interval: always (every write fsynced before it is acknowledged).",
    "Latencies are closed loop (one request at a time) after a warm-up, except the open-loop "
    "rows, which are measured from each order's intended send time.",
    "bridge sync order->ack: the engine is idle before each order (a status() request after the "
    "final report waits for its order store update); 'back to back' rows do not wait.",
    "(a2) runs on a server whose EXECUTIONS stream is deleted, so its answer is a core message.",
    "Baselines send the bytes of one serialized bridge NewOrder; the bridge adds its headers "
    "(correlation id, schema, the signature of the identity, and Nats-Msg-Id on the queued "
    "path).",
)


def run_async(coro: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """Run ``coro`` on a fresh event loop of the given kind ("asyncio" or "uvloop")."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def event_loops(no_uvloop: bool) -> list[str]:
    if no_uvloop:
        return ["asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


async def _provision(handle: ServerHandle, *, drop_executions: bool) -> None:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        await provision(nc)
        if drop_executions:
            await nc.jsm().delete_stream(contract.EXECUTIONS_STREAM)
    finally:
        await nc.close()


def _server(creds: DevCredentials, work: Path, name: str) -> LocalNatsServer:
    return LocalNatsServer(
        creds, name=name, store_dir=work / f"{name}-store", log_file=work / f"{name}.log"
    )


def _rss(server: RustServer, results: Sequence[Result]) -> None:
    for r in results:
        r.peer_rss_mb = None if server.peak_rss is None else server.peak_rss / MIB


class Bench:
    def __init__(
        self,
        creds: DevCredentials,
        work: Path,
        profile: Profile,
        loops: Sequence[str],
        console: Console,
    ) -> None:
        self.creds = creds
        self.work = work
        self.profile = profile
        self.loops = list(loops)
        self.console = console
        self.run_id = uuid.uuid4().hex[:8]
        self.payload = bridge_paths.order_payload(self.run_id)

    def step(self, text: str) -> None:
        self.console.log(f"[bold]{text}[/bold]")

    def nats_baselines(self) -> list[Result]:
        p, out = self.profile, []
        self.step("context: disk append + fsync")
        out.append(baselines.disk_fsync(self.work, p.fsync))
        with _server(self.creds, self.work, "bench-baseline") as server:
            handle = server.handle
            run_async(_provision(handle, drop_executions=True))
            args = baselines.engine_args(handle)
            echo_args = [*args, "--subject", contract.SUBMIT_ALL]
            with RustServer("nats-echo", echo_args, log_file=self.work / "nats-echo.log") as srv:
                rows = []
                for loop in self.loops:
                    self.step(f"(a1) NATS request -> Rust echo [{loop}]")
                    rows.append(
                        run_async(
                            baselines.nats_request(
                                handle, srv.pid, p.nats_echo, self.payload, loop
                            ),
                            loop,
                        )
                    )
            _rss(srv, rows)
            out += rows
            js_args = [
                *args,
                "--stream",
                contract.ORDERS_STREAM,
                "--consumer",
                contract.ENGINE_CONSUMER,
                "--reply-prefix",
                contract.executions(baselines.JS_REPLY_ACCOUNT, ""),
            ]
            with RustServer("js-consumer", js_args, log_file=self.work / "js.log") as srv:
                self.step("(a2) JetStream publish -> Rust consumer answer [asyncio]")
                row = run_async(
                    baselines.js_publish_answered(
                        handle, srv.pid, p.js_echo, self.payload, self.run_id, "asyncio"
                    )
                )
            _rss(srv, [row])
            out.append(row)
        return out

    def bridge(self) -> list[Result]:
        p, out = self.profile, []
        with _server(self.creds, self.work, "bench-bridge") as server:
            handle = server.handle
            run_async(_provision(handle, drop_executions=False))
            self.step("recording the messages one enqueue_batch publishes (for (b'))")
            published = run_async(bridge_paths.record_enqueue(handle, p.publish, f"{self.run_id}r"))
            # Symmetric order (raw, replay, bridge, bridge, replay, raw), so that drift during
            # the phase (disk, other load on the machine) weighs on every side alike.
            raw: list[Result] = []
            replay: list[Result] = []
            queued: list[Result] = []
            kinds = ("raw", "replay", "bridge", "bridge", "replay", "raw")
            for i, kind in enumerate(kinds):
                tag = f"{self.run_id}{i}"
                if kind == "raw":
                    self.step(f"(b) raw js.publish_async throughput -> ORDERS, run {len(raw) + 1}")
                    raw.append(
                        run_async(bridge_paths.publish_raw(handle, p.publish, self.payload, tag))
                    )
                elif kind == "replay":
                    self.step(f"(b') raw replay of enqueue_batch's messages, run {len(replay) + 1}")
                    replay.append(
                        run_async(
                            bridge_paths.publish_replay(handle, published, p.publish.warmup, tag)
                        )
                    )
                else:
                    self.step(f"bridge enqueue_batch throughput -> ORDERS, run {len(queued) + 1}")
                    queued.append(
                        run_async(bridge_paths.enqueue_throughput(handle, p.publish, tag))
                    )
            out += [merge_throughput(raw), merge_throughput(replay), merge_throughput(queued)]
            backlog = run_async(bridge_paths.prequeue(handle, p.drain_orders, self.run_id))
            engine = bridge_paths.Engine(handle, ENGINE_CONFIG, self.work / "engine.log")
            sink = ReportSink(handle, self.work)
            engine_rows: list[Result] = []
            try:
                sink.start()
                self.step(f"engine drain of {backlog} queued orders")
                engine_rows.append(
                    run_async(bridge_paths.drain(handle, engine, backlog, p.drain_timeout))
                )
                self.step("(ctx) disk: 512 B append + fdatasync in the store's directory")
                out.append(baselines.disk_fdatasync(self.work / "bench-bridge-store", p.fsync))
                for loop in self.loops:
                    self.step(f"bridge sync submit -> ack / fill, engine idle [{loop}]")
                    engine_rows += run_async(
                        bridge_paths.sync_isolated(handle, engine, p.sync, self.run_id, loop),
                        loop,
                    )
                    self.step(f"bridge sync submit -> ack, back to back [{loop}]")
                    engine_rows.append(
                        run_async(
                            bridge_paths.sync_back_to_back(
                                handle, engine, p.sync_b2b, self.run_id, loop
                            ),
                            loop,
                        )
                    )
                self.step(f"bridge sync submit -> ack, {p.sync_concurrency} concurrent submitters")
                engine_rows.append(
                    run_async(
                        bridge_paths.sync_concurrent(
                            handle, engine, p.sync_concurrent, p.sync_concurrency, self.run_id
                        )
                    )
                )
                legs: list[tuple[bool, list[Result]]] = []
                for i, signed in enumerate(bridge_paths.SIGNING_LEGS):
                    engine.restart_with(bridge_paths.signing_engine_env(signed))
                    self.step(f"signing {'on' if signed else 'off'}: sync submit, leg {i + 1}")
                    legs.append(
                        (
                            signed,
                            run_async(
                                bridge_paths.signing_leg(
                                    handle, engine, p.signing, self.run_id, i, signed
                                )
                            ),
                        )
                    )
                engine_rows += bridge_paths.signing_rows(legs)
                # The diagnostic sends plain, unsigned requests: to an engine that does not
                # require signatures (the last signing leg's), then the default engine again.
                engine.restart_with(bridge_paths.signing_engine_env(False))
                self.step("diagnostic: raw nats-py requests -> engine, back to back")
                engine_rows.append(
                    run_async(
                        bridge_paths.raw_request_to_engine(handle, engine, p.sync_b2b, self.run_id)
                    )
                )
                engine.restart_with({})
                self.step(f"queued: bursts of {p.burst_orders} orders -> last final report")
                engine_rows.append(
                    run_async(
                        bridge_paths.burst(
                            handle, engine, sink, p.burst_orders, p.burst, self.run_id
                        )
                    )
                )
                self.step(f"queued end to end: {p.e2e_orders} orders from one publisher")
                engine_rows.append(
                    run_async(
                        bridge_paths.drain_e2e(
                            handle, engine, sink, p.e2e_orders, p.e2e_seconds, self.run_id
                        )
                    )
                )
                for rate in p.open_rates:
                    self.step(f"bridge queued path, open loop at {rate}/s")
                    engine_rows.append(
                        run_async(
                            bridge_paths.open_loop(
                                handle,
                                engine,
                                sink,
                                rate,
                                p.open_seconds,
                                p.open_max_orders,
                                p.open_grace,
                                self.run_id,
                            )
                        )
                    )
                self.step("market data: venue event -> consumer, bridge vs raw (ABBA)")
                md_rows, recording = run_async(
                    bridge_paths.market_data_latency(
                        handle, engine, p.md_latency_orders, self.run_id
                    )
                )
                engine_rows += md_rows
                self.step("runtime configuration: write -> applied, engine and client vs raw")
                engine_rows += run_async(
                    bridge_paths.config_apply(handle, engine, p.config_changes)
                )
            finally:
                sink.stop()
                engine.stop()
            for r in engine_rows:
                r.peer_rss_mb = engine.peak_rss / MIB
            out += engine_rows
            # The engine is stopped: the replay answers the snapshot requests of its symbol.
            self.step("market data: replayed updates/s into one consumer, bridge vs raw")
            out += run_async(
                bridge_paths.market_data_throughput(handle, recording, p.md_replay_updates)
            )
        self.step("engine by itself: in-process decode/validate/match/encode, no I/O")
        out += bridge_paths.engine_core(ENGINE_CONFIG, p.core_orders)
        return out

    def rpc_baselines(self) -> list[Result]:
        p, out = self.profile, []
        tls = baselines.grpc_credentials(self.creds)
        grpc_args = baselines.server_tls_args(self.creds)
        with RustServer("grpc-echo", grpc_args, log_file=self.work / "grpc.log") as srv:
            self.step("(c) gRPC unary -> tonic echo [grpc.aio, blocking]")
            rows = [
                run_async(baselines.grpc_aio(srv.address, tls, srv.pid, p.grpc, self.payload)),
                baselines.grpc_blocking(srv.address, tls, srv.pid, p.grpc, self.payload),
            ]
        _rss(srv, rows)
        out += rows
        tcp_args = baselines.server_tls_args(self.creds)
        with RustServer("tcp-echo", tcp_args, log_file=self.work / "tcp.log") as srv:
            rows = []
            for loop in self.loops:
                self.step(f"(d) TCP+mTLS ping-pong -> tokio echo [{loop}]")
                rows.append(
                    run_async(
                        baselines.tcp_ping_pong(
                            srv.address, self.creds, srv.pid, p.tcp, self.payload, loop
                        ),
                        loop,
                    )
                )
        _rss(srv, rows)
        out += rows
        with RustServer("tcp-echo", ["--plain"], log_file=self.work / "tcp.log") as srv:
            self.step("(d) plain TCP ping-pong -> tokio echo [asyncio]")
            row = run_async(
                baselines.tcp_ping_pong(srv.address, None, srv.pid, p.tcp, self.payload, "asyncio")
            )
        _rss(srv, [row])
        out.append(row)
        return out


def show(console: Console, path: Path) -> None:
    """Render the tables of a results file written by an earlier run."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    results = [result_from_json(s) for s in doc["scenarios"]]
    meta = doc["meta"]
    console.rule(
        f"[bold]bench ({meta['profile']}, {meta['date']}): {meta['machine']['cpu_model']}, "
        f"{meta['machine']['logical_cores']} cores, payload {meta['payload_bytes']} B"
    )
    report.render(console, results, report.targets(results))
    if "scaling" in doc:
        scaling.render(console, [scaling.row_from_json(r) for r in doc["scaling"]["rows"]])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: ~1 s per scenario")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument("--creds", type=Path, default=None, help="dev PKI root (default .dev)")
    parser.add_argument("--no-uvloop", action="store_true", help="only the default event loop")
    parser.add_argument(
        "--keep-work", action="store_true", help="keep server stores and logs (temp dir)"
    )
    parser.add_argument(
        "--no-scaling", action="store_true", help="leave out the partitioned engines' phase"
    )
    parser.add_argument(
        "--show",
        type=Path,
        metavar="JSON",
        help="print the tables of a saved results file (e.g. bench/results/latest.json), no run",
    )
    ns = parser.parse_args(argv)
    # As an orchestrator would run: logging configured once, at WARNING (per-order bridge logs
    # are debug level; the library alone is silent until an application configures logging).
    configure_logging("WARNING", json=True)
    # Wide enough for the table when piped (e.g. into a file for the README).
    console = Console(width=None if sys.stdout.isatty() else 240)
    if ns.show is not None:
        show(console, ns.show)
        return 0
    profile = QUICK if ns.quick else FULL
    creds = ensure_dev_credentials(ns.creds if ns.creds is not None else default_root())
    out_dir: Path = ns.out
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    bench = Bench(creds, work, profile, event_loops(ns.no_uvloop), console)
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: list[Result] = []
    try:
        results += bench.nats_baselines()
        results += bench.bridge()
        results += bench.rpc_baselines()
        scaling_doc = None
        if not ns.no_scaling:
            scaling_doc = scaling.run(
                creds,
                work,
                scaling.QUICK if ns.quick else scaling.FULL,
                bench.run_id,
                bench.step,
            )
    except BaseException:
        console.print(f"[red]benchmark failed; server stores and logs kept in {work}[/red]")
        raise
    missing = set(scenario_ids(profile, bench.loops)) - {r.id for r in results}
    if missing:
        raise BenchError(f"scenarios without a result: {sorted(missing)}")
    goals = report.targets(results)
    meta: dict[str, Any] = {
        **describe(),
        "profile": profile.name,
        "event_loops": bench.loops,
        "payload_bytes": len(bench.payload),
        "duration_s": round(time.perf_counter() - started, 1),
        # Other work on the machine skews results: the 1-minute load average around the run.
        "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "method": list(METHOD_NOTES),
    }
    console.rule(
        f"[bold]bench ({profile.name}): {meta['machine']['cpu_model']}, "
        f"{meta['machine']['logical_cores']} cores, payload {len(bench.payload)} B"
    )
    report.render(console, results, goals)
    for note in METHOD_NOTES:
        console.print(f"[dim]- {escape(note)}[/dim]")
    if scaling_doc is not None:
        scaling.render(console, scaling_doc["_rows"])
    json_path, png_path = out_dir / "latest.json", out_dir / "latency.png"
    report.write_json(
        json_path,
        meta,
        results,
        goals,
        None if scaling_doc is None else scaling.public(scaling_doc),
    )
    report.write_plot(
        png_path,
        results,
        f"order latency percentiles, {meta['machine']['cpu_model']} "
        f"x{meta['machine']['logical_cores']}, mutual TLS, {meta['date']}",
    )
    console.print(f"wrote {json_path} and {png_path} in {meta['duration_s']} s")
    if ns.keep_work:
        console.print(f"server stores and logs: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
