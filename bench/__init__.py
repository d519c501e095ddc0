"""Benchmark suite: the bridge's order paths measured next to the transports it is built on.

``./dev bench`` (or ``python -m bench [--quick] [--out DIR]``) starts its own nats-server with
the production configuration (``nats/server.conf``: mutual TLS 1.3, NKeys, JetStream with
``sync_interval: always``), the release engine and the Rust baseline servers of ``bench/rs``,
measures every scenario with HdrHistogram after a warm-up, and writes a table to the terminal,
``bench/results/latest.json`` and ``bench/results/latency.png``.

Modules: ``profile`` (how much to run), ``procs`` (child processes, CPU and memory),
``measure`` (histograms, result records), ``bridge_paths/`` (the bridge's sync and queued
paths, one module per scenario), ``baselines`` (NATS, JetStream, gRPC and TCP floors),
``report`` (targets, table, JSON, plot), ``run`` (the command line and the order of phases).
"""
