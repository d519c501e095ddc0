//! The NATS connection: connect options (mutual TLS, NKey, the engine role's inbox prefix),
//! reconnect backoff, connection events, and the start-up wait for a first connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine_key::EngineKey;
use crate::error::ConnectError;
use crate::jetstream_errors;
use crate::metrics::Metrics;
use crate::retry;

/// Exit code of an engine that lost its connection while its projections are persisted
/// asynchronously ([`stop_before_reconnecting`]).
pub const EXIT_RECONNECT_WITH_ASYNC_PROJECTIONS: i32 = 75;

/// Set once the engine serves with asynchronously persisted projections: the next connection
/// attempt (a reconnect) stops the process instead.
static STOP_BEFORE_RECONNECTING: AtomicBool = AtomicBool::new(false);

/// From now on, a lost connection stops the engine before it reconnects (exit code
/// [`EXIT_RECONNECT_WITH_ASYNC_PROJECTIONS`]).
///
/// Why: with `persist_mode: async` the server that comes back may have lost the unflushed tail
/// of EXECUTIONS and the order store. Repair (`repair.rs`) restores it from the journal, but only
/// if nothing lands behind the gap first, and async-nats flushes what it buffered while
/// disconnected (pending publishes, retried writes) to the new connection before anything of
/// ours can run. The reconnect delay callback runs before every connection attempt, so exiting
/// there sends nothing more; the restarted engine repairs before it writes.
pub fn stop_before_reconnecting() {
    STOP_BEFORE_RECONNECTING.store(true, Ordering::Release);
}

/// Connects with mutual TLS and the engine's NKey, using the engine role's inbox prefix.
///
/// Reconnects (and the first connection, `retry_on_initial_connect`) back off exponentially
/// with jitter ([`retry::Policy`]); subscriptions are re-established by async-nats itself.
/// Start-up fails with a clear error if no connection is up within `connect_deadline_ms`.
/// `key` is the engine's NKey ([`EngineKey::load`] of `nkey_seed_file`), read once by the
/// caller. Connection events keep `metrics` current: connected (readiness), reconnects.
pub async fn connect(
    cfg: &Config,
    key: Option<&EngineKey>,
    metrics: Arc<Metrics>,
) -> Result<Client, ConnectError> {
    let policy = retry::Policy::from_config(cfg);
    // A connection after the first one is a reconnect.
    let connected_before = Arc::new(AtomicBool::new(false));
    let (state_tx, mut state_rx) = tokio::sync::watch::channel(ConnState::Connecting);
    let mut opts = async_nats::ConnectOptions::new()
        .name(&cfg.client_name)
        .custom_inbox_prefix(&cfg.inbox_prefix)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(
            cfg.jetstream_request_timeout_ms,
        )))
        .ping_interval(Duration::from_millis(cfg.ping_interval_ms))
        .subscription_capacity(cfg.subscription_capacity)
        .reconnect_delay_callback(move |attempts| {
            if STOP_BEFORE_RECONNECTING.load(Ordering::Acquire) {
                error!(
                    exit_code = EXIT_RECONNECT_WITH_ASYNC_PROJECTIONS,
                    "connection lost while the projections are persisted asynchronously: stopping before reconnecting, so that the restarted engine repairs them from the journal before anything is written (runbooks/journal.md)"
                );
                std::process::exit(EXIT_RECONNECT_WITH_ASYNC_PROJECTIONS);
            }
            policy.delay(attempts.saturating_sub(1))
        })
        .max_reconnects(match cfg.max_reconnect_attempts {
            n if n < 0 => None,
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        })
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let state_tx = state_tx.clone();
            let metrics = metrics.clone();
            let connected_before = connected_before.clone();
            async move {
                match &event {
                    async_nats::Event::Connected => {
                        info!(%event, "nats connection event");
                        if connected_before.swap(true, Ordering::AcqRel) {
                            metrics.reconnected();
                        }
                        metrics.health.set_connected(true);
                        state_tx.send_replace(ConnState::Connected);
                    }
                    async_nats::Event::Disconnected => {
                        metrics.health.set_connected(false);
                        warn!(%event, "nats connection event");
                    }
                    async_nats::Event::Closed => {
                        metrics.health.set_connected(false);
                        error!(%event, "nats connection event");
                        state_tx.send_replace(ConnState::Closed);
                    }
                    async_nats::Event::ClientError(_) | async_nats::Event::ServerError(_) => {
                        if let async_nats::Event::ServerError(async_nats::ServerError::Other(e)) =
                            &event
                        {
                            jetstream_errors::note_server_error(e);
                        }
                        warn!(%event, "nats connection event");
                        state_tx.send_if_modified(|s| match s {
                            ConnState::Connecting | ConnState::Failing(_) => {
                                *s = ConnState::Failing(event.to_string());
                                true
                            }
                            _ => false,
                        });
                    }
                    _ => warn!(%event, "nats connection event"),
                }
            }
        });
    if let Some(key) = key {
        opts = opts.nkey(key.seed_for_connection());
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<&str> = cfg.nats_url.split(',').map(str::trim).collect();
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|source| ConnectError::BadUrl {
            urls: cfg.nats_url.clone(),
            source,
        })?;
    let client = opts.connect(addrs).await?;
    let deadline = Duration::from_millis(cfg.connect_deadline_ms);
    let settled = tokio::time::timeout(deadline, async {
        state_rx
            .wait_for(|s| matches!(s, ConnState::Connected | ConnState::Closed))
            .await
            .map(|s| s.clone())
    })
    .await;
    match settled {
        Ok(Ok(ConnState::Connected)) => Ok(client),
        _ => {
            let last = match &*state_rx.borrow() {
                ConnState::Failing(e) => e.clone(),
                ConnState::Closed => "connection closed (max_reconnect_attempts reached)".into(),
                _ => "no answer".into(),
            };
            Err(ConnectError::Deadline {
                urls: cfg.nats_url.clone(),
                deadline_ms: cfg.connect_deadline_ms,
                last,
            })
        }
    }
}

/// Connection state as seen by the start-up wait.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    Connecting,
    /// Still trying; the last error event.
    Failing(String),
    Connected,
    Closed,
}
