"""Benchmark suite: the bridge's order paths measured next to the transports it is built on.

``./dev bench`` (or ``python -m bench [--quick] [--out DIR]``) starts its own nats-server with
the production configuration (``nats/server.conf``: mutual TLS 1.3, NKeys, JetStream with
``sync_interval: always``), the release engine and the Rust baseline servers of ``bench/rs``,
measures every scenario with HdrHistogram after a warm-up, and writes a table to the terminal,
``bench/results/latest.json`` and ``bench/results/latency.png``.

Modules: ``profile`` (how much to run), ``procs`` (child processes, CPU and memory),
``measure`` (histograms, result records), ``bridge_paths/`` (the bridge's sync and queued
paths, one module per scenario), ``baselines`` (NATS, JetStream, gRPC and TCP floors),
``report_sink`` (the Rust receiver of the queued rows' final reports), ``report`` (targets,
table, JSON, plot; ``targets_md`` and ``targets_durable`` hold the targets of issues 15 and
17), ``run`` (the command line and the order of phases).

``python -m bench.fsyncs`` (``./dev bench-fsyncs``) counts the fsync/fdatasync calls of
nats-server and the engine per order on each path (``syscall_count``: strace -c).
"""
