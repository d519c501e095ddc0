//! Execution engine of the bridge.
//!
//! Module map. The pure core (no I/O, no async; time passed in):
//! - [`book`]: price-time matching for one symbol.
//! - [`order`]: an order's life: the state machine, the tracked order and its reports.
//! - [`venue`]: the books and the orders resting in them -> execution reports.
//! - [`house`]: the venue's own orders (seeded liquidity of the account `_house`).
//! - [`limits`]: risk limits per symbol and per order, in fixed point.
//! - [`validate`]: field, size, symbol, risk and deadline checks.
//! - [`ack`]: the one builder of `OrderAck`s.
//! - [`alias`]: a replace's record under its own id, and what one found there means.
//! - [`intake`]: an order's record and answer, every size bounded.
//! - [`reconcile`]: recovery's decision for each open record after a restart.
//! - [`fixed`]: exact fixed-point (1e-8) arithmetic and wire decimals.
//! - [`auth`]: who may do what: the entitlements file, order signatures, the signature
//!   window, replays, entitlement and account checks; each refusal typed.
//! - [`chain`]: the execution reports' hash chain: links, their headers, the head check.
//! - [`marketdata`]: the venue's market data: L2 views, level diffs, sequenced updates,
//!   quotes, trades, snapshots.
//! - [`feed`]: input streams into the engine: credit per stream, refusals, bounds.
//! - [`partition`]: a symbol's partition (FNV-1a 32 mod `PARTITIONS`, nats-server's
//!   `partition()` mapping) and a partition's engine id.
//!
//! Configuration and policy:
//! - [`config`]: defaults < TOML file < `BRIDGE_*` environment; renamed knobs refused.
//! - [`retry`]: the backoff policy of reconnects and JetStream retries.
//! - [`contract`]: every subject, stream, consumer, bucket and header name, id rule and size
//!   limit, generated from `schemas/bridge/v1/contract.toml`.
//! - [`logging`]: JSON log lines with the field names the Python side uses.
//! - [`secret`]: secrets (the NKey seed) in a type that prints `[REDACTED]`.
//! - [`trace`]: W3C `traceparent` and the ids (correlation, trace) of every line about an order.
//!
//! The NATS side:
//! - [`error`]: one error enum per boundary, each with a kind to match.
//! - [`engine_key`]: the engine's NKey seed, read once (connection, chain signatures).
//! - [`connection`]: connect options (TLS, NKey), reconnect backoff, connection events.
//! - [`jetstream_errors`]: permanent vs transient JetStream failures; readiness while
//!   retrying.
//! - [`lease`]: the KV leases that keep a second engine from serving the same symbols.
//! - [`consumer`]: binding (and re-creating) the durable ORDERS pull consumer.
//! - [`journal`]: the engine's journal (stream JOURNAL): one fsynced entry per commit group,
//!   a chain no second writer can fork.
//! - [`commit`]: a group's journal entry, then its projections (EXECUTIONS, the order store).
//! - [`repair`]: the projections brought up to the journal at start-up and after a reconnect.
//! - [`store`]: the order store (KV `bridge_orders`, a projection): create (the dedupe), read,
//!   write.
//! - [`publish`]: execution reports to EXECUTIONS, one message each, pipelined, each linked
//!   into the engine's hash chain; the chain head at start-up; the last stored report.
//! - [`failpoint`]: crash-test failpoints.
//! - [`alerts`]: security alerts to the ALERTS stream, off the order path.
//! - [`md_publish`]: market data to core NATS through a bounded queue, off the order path.
//! - [`engine`]: the engine's state and the protocol steps the commands share.
//! - [`commands`]: one module per request (submit, queued, cancel, status, market data and
//!   input streams) and the dispatch.
//! - [`schema_version`]: the `Bridge-Schema-Version` rule (absent = 1.0, any minor of the
//!   engine's major, another major refused), pure.
//! - [`service`]: the engine as NATS micro service `bridge-engine`: its endpoints are the
//!   request-reply intake; each request answered once, through the service's statistics.
//! - [`recovery`]: start-up recovery of this engine's open orders and books.
//! - [`metrics`]: every Prometheus metric of the engine (`schemas/metrics.toml`), readiness.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`; the `--check-ready` probe.
//! - [`runtime_config`]: the config bucket's documents (risk, symbols, trading state, log
//!   level) watched and applied at run time; the kill switch.
//! - [`sessions`]: orchestrator sessions with cancel on disconnect: the pure core (grace,
//!   heartbeats, which are lost at `now`), the session store (KV `bridge_sessions`) and its watch.
//! - [`run`]: the engine's life: connect, lease, bind, recover, serve, shut down.
//! - [`proto`]: prost-generated `bridge.v1` and engine state types.

pub mod ack;
pub mod alerts;
pub mod alias;
pub mod auth;
pub mod book;
pub mod chain;
pub mod commands;
pub mod commit;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod contract;
pub mod engine;
pub mod engine_key;
pub mod error;
pub mod failpoint;
pub mod feed;
pub mod fixed;
pub mod house;
pub mod http;
pub mod intake;
pub mod jetstream_errors;
pub mod journal;
pub mod lease;
pub mod limits;
pub mod logging;
pub mod marketdata;
pub mod md_publish;
pub mod metrics;
pub mod order;
pub mod partition;
pub mod partitions;
pub mod proto;
pub mod publish;
pub mod reconcile;
pub mod recovery;
pub mod repair;
pub mod retry;
pub mod run;
pub mod runtime_config;
pub mod schema_version;
pub mod secret;
pub mod service;
pub mod sessions;
pub mod store;
pub mod trace;
pub mod validate;
pub mod venue;
