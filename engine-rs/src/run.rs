//! The engine's life: connect, take the leases, bind, find the report chain's head, recover,
//! register as NATS micro service ([`crate::service`]), serve every request through one dispatch ([`Engine::dispatch`]) and the ORDERS pull consumer, then on shutdown
//! stop intake, finish what was delivered, log what intake could not attribute, flush and
//! release the leases. SIGHUP re-reads the entitlements file.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use backon::Retryable;
use futures::{FutureExt, StreamExt};
use tracing::{info, warn};

use crate::auth::{self, Entitlements};
use crate::commands::Request;
use crate::config::Config;
use crate::connection;
use crate::consumer;
use crate::engine::Engine;
use crate::engine_key::EngineKey;
use crate::error::{ConnectError, EngineError};
use crate::http;
use crate::jetstream_errors::retrying;
use crate::lease;
use crate::metrics::refresh::Refresher;
use crate::metrics::Metrics;
use crate::retry;
use crate::runtime_config;
use crate::service::Intake;

/// Payload bytes of the ORDERS messages taken into one commit group, at most (the rest of the
/// pull is the next group): about 1,500 orders of ~150 bytes.
const MAX_GROUP_PAYLOAD_BYTES: usize = 256 * 1024;

/// Runs the engine until `shutdown` resolves: recover, subscribe, serve; then stop intake,
/// finish in-flight orders, flush and return.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
    // A configuration that cannot check signatures stops start-up before anything connects.
    let entitlements = load_entitlements(&cfg)?;
    // Probes can reach the engine from here on: /healthz answers, /readyz says what is missing.
    let metrics = Arc::new(Metrics::new(cfg.symbols.keys()));
    let http = http::Server::start(&cfg.http_listen, metrics.clone()).await?;
    // The NKey seed is read once: it authenticates the connection and signs the report chain.
    let key = match &cfg.nkey_seed_file {
        Some(path) => Some(Arc::new(EngineKey::load(path).map_err(ConnectError::from)?)),
        None => {
            warn!("no nkey_seed_file: execution reports are chained but not signed");
            None
        }
    };
    let client = connection::connect(&cfg, key.as_deref(), metrics.clone()).await?;
    let _refresher = Refresher::start(
        jetstream::new(client.clone()),
        metrics.clone(),
        Duration::from_millis(cfg.metrics_refresh_ms),
    );
    let shared = Shared {
        client,
        entitlements,
        key,
        metrics,
    };
    if cfg.partitioned {
        crate::partitions::run(&cfg, &shared, shutdown).await?;
        http.stop().await;
        info!("engine stopped cleanly");
        return Ok(());
    }
    // Before anything else touches orders: refuse to run beside another live engine.
    // Both are retried while JetStream is unavailable (a cluster electing leaders at start-up);
    // a refusal or a configuration error is final. The failpoint `no_leases` switches this
    // stopgap off, for the one test that shows what it prevents (split books).
    let mut lease = if cfg.failpoint.as_deref() == Some(NO_LEASES) {
        warn!("failpoint no_leases: running without leases (tests only): books may be split");
        None
    } else {
        Some(
            (|| lease::acquire(&shared.client, &cfg))
                .retry(retry::Backoff::from_config(&cfg))
                .when(|e| !matches!(e, lease::LeaseError::Refused(_)))
                .notify(|e, delay| retrying("take leases", &cfg.engine_id, e, delay))
                .await?,
        )
    };
    let served = serve(cfg.clone(), &shared, Instance::Whole, shutdown, async {
        match lease.as_mut() {
            Some(l) => EngineError::from(l.lost().await),
            None => std::future::pending().await,
        }
    })
    .await;
    served?;
    if let Some(lease) = lease {
        lease.release().await;
    }
    http.stop().await;
    info!("engine stopped cleanly");
    Ok(())
}

/// The failpoint that runs an unpartitioned engine without its leases.
const NO_LEASES: &str = "no_leases";

/// What every engine instance of this process shares.
#[derive(Clone)]
pub struct Shared {
    pub client: async_nats::Client,
    pub entitlements: Option<Entitlements>,
    pub key: Option<Arc<EngineKey>>,
    pub metrics: Arc<Metrics>,
}

/// What one [`serve`] serves.
pub enum Instance {
    /// Every configured symbol: the process's only instance (it owns the readiness flags).
    Whole,
    /// One partition, as its owner of `epoch` (`partitions.rs`); `ready` is told once it
    /// serves; `lease` says until when its lease is known to be ours.
    Partition {
        epoch: u64,
        ready: tokio::sync::oneshot::Sender<()>,
        lease: crate::partitions::Confirmed,
    },
}

/// One engine instance, until `shutdown` (stop intake, finish, return) or `lost` (return its
/// error at once): bind, repair, recover, serve.
pub async fn serve(
    cfg: Config,
    shared: &Shared,
    instance: Instance,
    shutdown: impl Future<Output = ()>,
    lost: impl Future<Output = EngineError>,
) -> Result<(), EngineError> {
    let Shared {
        client,
        entitlements,
        key,
        metrics,
    } = shared.clone();
    let whole = matches!(instance, Instance::Whole);
    // Partitioned: nothing is written once the lease may have expired (a pause past the TTL):
    // checked whenever the loop wakes to write, before the renewal round notices the loss.
    let lease = match &instance {
        Instance::Partition { lease, .. } => Some(lease.clone()),
        Instance::Whole => None,
    };
    let held = || {
        lease
            .as_ref()
            .map_or(Ok(()), crate::partitions::Confirmed::check)
    };
    let (mut engine, consumer) = (|| {
        Engine::new(
            cfg.clone(),
            client.clone(),
            entitlements.clone(),
            key.clone(),
            metrics.clone(),
        )
    })
    .retry(retry::Backoff::from_config(&cfg))
    .when(|e| matches!(e, EngineError::Setup(_)))
    .notify(|e, delay| retrying("bind streams and bucket", &cfg.engine_id, e, delay))
    .await?;
    if whole {
        metrics.health.set_consumer_bound(true);
    }
    // Before anything is published (recovery may publish): where this engine's chain and
    // journal end, and the projections brought up to the journal (`repair.rs`).
    engine.repair().await?;
    if engine.projections_persisted_async().await? {
        // Repair needs the lost tail of a crashed server to be a suffix: nothing may be
        // written after a reconnect before it runs. The restart repairs (`connection.rs`).
        connection::stop_before_reconnecting();
        info!("projections persisted asynchronously: a lost connection stops the engine (its restart repairs them)");
    }
    if let Instance::Partition { epoch, .. } = &instance {
        // The partition's journal is ours from here: the previous owner's next write fails.
        engine.journal.fence(*epoch).await?;
    }
    let started = Instant::now();
    let recovered = engine.recover().await?;
    metrics.recovery(started.elapsed(), recovered);
    // Market data starts from the restored books: the first snapshot is them.
    engine.publish_books();
    engine.observe_books(cfg.symbols.keys().map(String::as_str));
    if whole {
        metrics.health.set_recovery_finished();
    }
    // The runtime configuration (kill switch, limits) is in force before the first order.
    let mut config_events = runtime_config::watch::start(client.clone(), &cfg);
    engine
        .load_config(
            &mut config_events,
            Duration::from_millis(cfg.jetstream_retry_deadline_ms),
        )
        .await;
    // Sessions (cancel on disconnect): every session known before the first order.
    let mut session_events = crate::sessions::watch::start(client.clone(), &cfg);
    let served: Result<(), EngineError> = async {
    engine
        .load_sessions(
            &mut session_events,
            Duration::from_millis(cfg.jetstream_retry_deadline_ms),
        )
        .await?;
    let mut subs = Intake::start(&client, &cfg).await?;
    client.flush().await.map_err(ConnectError::from)?;

    // Ready only once the service's endpoints are registered server-side (flushed above):
    // tooling and operators take this line to mean "requests will be answered".
    info!(engine_id = %cfg.engine_id, recovered, "engine ready");
    // /readyz answers 200 from here: after the line above, so that a probe that saw 200 finds
    // it in the log.
    let ready = match instance {
        Instance::Whole => {
            metrics.health.set_intake_subscribed(true);
            None
        }
        Instance::Partition { ready, .. } => Some(ready),
    };
    if let Some(ready) = ready {
        let _ = ready.send(());
    }

    tokio::pin!(shutdown);
    tokio::pin!(lost);
    let mut stopping = false;
    let js = jetstream::new(client.clone());
    let mut consumer = consumer::Pulls::bind(&js, consumer, cfg.partition).await?;
    // A pull ends with messages or the server's 408 within pull_expires_ms; waiting longer than
    // this for its next item means it is stalled (its server or consumer leader is gone, or the
    // request was lost in a reconnect).
    let stall_after = Duration::from_millis(cfg.pull_expires_ms + cfg.consumer_stall_timeout_ms);
    loop {
        // One pull request at a time: at most `pull_batch` queued orders are in this process,
        // and at most max_ack_pending unacked across all engines (server side).
        let mut batch = if stopping {
            None
        } else {
            match consumer
                .pull(cfg.pull_batch, Duration::from_millis(cfg.pull_expires_ms))
                .await
            {
                Ok(b) => Some(b),
                Err(e) => {
                    warn!(error = %e, "pull request failed: re-binding the consumer");
                    metrics.health.set_consumer_bound(false);
                    consumer.rebind(&js, &cfg).await?;
                    metrics.health.set_consumer_bound(true);
                    continue;
                }
            }
        };
        let mut rebind = false;
        loop {
            tokio::select! {
                m = async { match batch.as_mut() { Some(b) => tokio::time::timeout(stall_after, b.next()).await, None => std::future::pending().await } } => match m {
                    Ok(Some(Ok(m))) => {
                        // Take every message of this pull that has already arrived, and run
                        // them through the protocol together.
                        let mut bytes = m.payload.len();
                        let mut msgs = vec![m];
                        let mut ended = None;
                        if let Some(b) = batch.as_mut() {
                            // One commit group stays small enough to answer promptly: batch
                            // messages carry up to 1,024 orders each.
                            while msgs.len() < cfg.pull_batch && bytes < MAX_GROUP_PAYLOAD_BYTES {
                                match b.next().now_or_never() {
                                    Some(Some(Ok(m))) => {
                                        bytes += m.payload.len();
                                        msgs.push(m);
                                    }
                                    Some(Some(Err(e))) => { ended = Some(Some(e)); break; }
                                    Some(None) => { ended = Some(None); break; }
                                    None => break,
                                }
                            }
                        }
                        held()?;
                        engine.repair_if_reconnected().await?;
                        engine.answer_statuses(&mut subs.statuses).await?;
                        let msgs = engine.relay_foreign_queued(msgs);
                        if !msgs.is_empty() {
                            engine.on_queued_batch(&msgs).await?;
                        }
                        engine.commit_created().await?;
                        engine.market_data_after_command();
                        match ended {
                            Some(Some(e)) => { warn!(error = %e, "pull ended with an error: re-binding the consumer"); rebind = true; break; }
                            Some(None) => break,
                            None => {}
                        }
                    }
                    Ok(Some(Err(e))) => { warn!(error = %e, "pull ended with an error: re-binding the consumer"); rebind = true; break; }
                    Ok(None) => break,
                    Err(_) => {
                        warn!(stalled_ms = u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX), "consumer stalled: pull neither delivered nor ended; re-binding the consumer");
                        rebind = true;
                        break;
                    }
                },
                Some(request) = subs.next() => {
                    held()?;
                    engine.repair_if_reconnected().await?;
                    match request {
                        // Group commit: every submit already received, taken together.
                        Request::Submit(first) => {
                            let mut group = vec![first];
                            subs.ready_submits(&mut group, cfg.sync_group_max);
                            engine.dispatch_submits(group, &mut subs.statuses).await?;
                        }
                        other => engine.dispatch(other, &mut subs.statuses).await?,
                    }
                    engine.commit_created().await?;
                    engine.market_data_after_command();
                }
                () = due(engine.market_data_due()) => engine.flush_market_data(),
                // Timed duties (expiry, session grace): between commands, like everything else.
                () = due(engine.next_timer()) => {
                    held()?;
                    engine.repair_if_reconnected().await?;
                    engine.on_timer().await?;
                    engine.market_data_after_command();
                }
                // A configuration revision applies between commands, never within one.
                Some(event) = config_events.recv() => engine.on_config(event).await,
                // So does a session opened, closed or lost through any engine.
                Some(event) = session_events.recv() => {
                    held()?;
                    engine.repair_if_reconnected().await?;
                    engine.on_session_event(event).await?;
                    engine.market_data_after_command();
                }
                lost = &mut lost => return Err(lost),
                () = &mut shutdown, if !stopping => {
                    info!("shutdown requested: stopping intake");
                    if whole {
                        metrics.health.set_intake_subscribed(false);
                    }
                    stopping = true;
                    subs.stop_intake(&client).await;
                    if batch.is_none() { break; }
                }
                else => break,
            }
        }
        if rebind && !stopping {
            metrics.health.set_consumer_bound(false);
            consumer.rebind(&js, &cfg).await?;
            metrics.health.set_consumer_bound(true);
            info!("consumer re-bound: pulling again");
        }
        if stopping {
            // Serve requests delivered before the drain took effect.
            let deadline = tokio::time::sleep(Duration::from_millis(cfg.shutdown_timeout_ms));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    request = subs.next() => match request {
                        Some(request) => {
                            held()?;
                            engine.dispatch(request, &mut subs.statuses).await?;
                            engine.market_data_after_command();
                        }
                        None => break,
                    },
                    () = &mut deadline => { warn!("shutdown timeout: leaving remaining requests"); break; }
                }
            }
            break;
        }
    }
    subs.close().await;
    engine.flush_market_data();
    Ok(())
    }
    .await;
    // Whatever ended the run: what intake could not attribute, and the alerts still queued.
    engine.counters.log();
    engine
        .alerts
        .close(Duration::from_millis(cfg.jetstream_request_timeout_ms))
        .await;
    engine.md_out.close().await;
    served?;
    client.flush().await.map_err(ConnectError::from)?;
    Ok(())
}

/// Resolves at `due`; never when it is `None` (market data pending, the next timed duty).
async fn due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The entitlements signed order operations are checked against: `None` when signatures are
/// not required; an error when they are and the file is missing or invalid.
fn load_entitlements(cfg: &Config) -> Result<Option<Entitlements>, EngineError> {
    cfg.check_authorization()?;
    let (true, Some(path)) = (cfg.require_signatures, &cfg.entitlements_file) else {
        warn!("require_signatures is off: order operations are not authorized and no signer is recorded (benchmarks only)");
        return Ok(None);
    };
    let entitlements = auth::entitlements::load(path)?;
    info!(
        file = %path.display(),
        identities = entitlements.identities().len(),
        signature_window_ms = cfg.signature_window_ms,
        "entitlements loaded: every order operation must be signed"
    );
    Ok(Some(entitlements))
}
