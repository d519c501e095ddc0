//! Symbol-partitioned engines (`partitioned = true`): the contract's [`PARTITIONS`] split the
//! symbols ([`crate::partition::partition_of`]); each partition has one owner at a time, and
//! the engines of a deployment share them fairly ([`balance`]).
//!
//! - **Leases** in the bucket `bridge_leases`: `partition.<n>` names the owning engine
//!   ([`Holder`]); `member.<engine_id>` says an engine is live. Both are rewritten every TTL/3
//!   and vanish one TTL (the bucket's `max_age`) after their writer stops. A partition is
//!   taken with the atomic `kv.create`; the revision it returns is the owner's **epoch**.
//! - **Instances**: for each partition it holds, the process runs one engine instance
//!   ([`run::serve`]) whose engine id is the partition's (`p<n>`): its own books, journal
//!   (`bridge.v1.journal.p<n>`), report chain and order records, so a new owner recovers the
//!   partition exactly as a restarted engine recovers itself: repair from the journal, then
//!   the books from the records, resting orders in their time priority, seeded liquidity
//!   included.
//! - **Fencing**: the new owner's first journal entry is an empty one of its epoch
//!   ([`crate::journal::Journal::fence`]). Every entry is appended on the condition that it
//!   follows the writer's last one, and nothing is answered or published before its entry is
//!   stored, so an owner that lost its lease (paused past the TTL, cut off) cannot journal,
//!   acknowledge or report anything once the new owner has fenced: its next append fails
//!   ([`crate::error::JournalError::Fenced`]) and the instance ends. A renewal that finds
//!   the key gone or someone else's ends the instance at once too (aborted, not drained).
//! - **Routing**: every instance serves the shared request subjects (queue group) and relays
//!   an order of another partition to its owner (`commands/relay.rs`); cancels and the other
//!   order operations find the owner through the order's record (its engine id is the
//!   partition's).
//! - **Stop** (SIGTERM): every instance drains as an unpartitioned engine does, then its
//!   lease is deleted (at our revision), so the survivors take it at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::contract;
use crate::error::{EngineError, JournalError};
use crate::lease::{renew_every, Holder, LeaseError};
use crate::metrics::partitions::Change;
use crate::partition::{partition_id, partition_of, PARTITIONS_U32 as PARTITIONS};
use crate::run::{self, Instance, Shared};

pub mod balance;

/// Until when a partition's lease is known to be ours: the moment its last successful write
/// (take or renewal) was sent, plus four fifths of the TTL. The renewal round moves it; the
/// partition's instance writes nothing past it ([`Confirmed::check`]), so an engine paused
/// past its lease (SIGSTOP, a long stall) that wakes up with requests already delivered to it
/// does not serve them (not even the order store's `kv.create`, which no epoch fences) before
/// its renewal round finds the lease lost.
#[derive(Clone)]
pub struct Confirmed {
    until: Arc<Mutex<Instant>>,
    ttl: Duration,
}

impl Confirmed {
    fn new(sent: Instant, ttl: Duration) -> Confirmed {
        Confirmed {
            until: Arc::new(Mutex::new(sent + ttl * 4 / 5)),
            ttl,
        }
    }

    fn renewed(&self, sent: Instant) {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = sent + self.ttl * 4 / 5;
    }

    /// `Err` once the lease is no longer known to be ours: the instance stops without writing.
    pub fn check(&self) -> Result<(), EngineError> {
        let until = *self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if Instant::now() <= until {
            return Ok(());
        }
        Err(LeaseError::Lost(format!(
            "not renewed within {} ms (paused, or cut off): it may be someone else's",
            millis(self.ttl * 4 / 5)
        ))
        .into())
    }
}

/// One partition this process holds.
struct Held {
    revision: u64,
    epoch: u64,
    lease: Confirmed,
    stop: Option<oneshot::Sender<()>>,
    ready: Option<oneshot::Receiver<()>>,
    task: JoinHandle<Result<(), EngineError>>,
}

/// Runs this process's share of the partitions until `shutdown`, then stops every instance
/// and gives its leases back.
pub async fn run(
    cfg: &Config,
    shared: &Shared,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EngineError> {
    let js = jetstream::new(shared.client.clone());
    let kv = js
        .get_key_value(contract::LEASES_KV_BUCKET)
        .await
        .map_err(|e| LeaseError::Bucket(e.to_string()))?;
    let ttl = kv
        .status()
        .await
        .map_err(|e| LeaseError::Bucket(e.to_string()))?
        .max_age();
    if ttl.is_zero() {
        return Err(LeaseError::Bucket(
            "has no max_age: a dead owner's partitions would never move".into(),
        )
        .into());
    }
    let me = Holder::this_process(&cfg.engine_id);
    let value = me.encode();
    let member_key = contract::lease_member_key(&cfg.engine_id);
    let period = renew_every(ttl);
    let ownership = &shared.metrics.partitions;
    info!(engine_id = %cfg.engine_id, partitions = PARTITIONS, ttl_ms = millis(ttl), "partitioned engine: taking its share of the partitions");
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready_once = false;
    tokio::pin!(shutdown);
    let ended: Result<(), EngineError> = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = kv.put(&member_key, value.clone()).await {
            warn!(error = %e, "presence not renewed; retrying at the next round");
        }
        // Renew what we hold; a lease found lost ends its instance at once.
        let mut lost = Vec::new();
        for (p, h) in &mut held {
            let key = contract::lease_partition_key(&p.to_string());
            let sent = Instant::now();
            match kv.update(&key, value.clone(), h.revision).await {
                Ok(rev) => {
                    h.revision = rev;
                    h.lease.renewed(sent);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => lost.push(*p),
                Err(e) => {
                    warn!(partition = p, error = %e, "lease renewal failed; retrying at the next round")
                }
            }
        }
        for p in lost {
            if let Some(h) = held.remove(&p) {
                h.task.abort();
                ownership.changed(Change::Lost, 1, held.len());
                error!(partition = p, epoch = h.epoch, "partition lease lost (this engine did not renew it within the TTL: paused, or cut off from NATS): its instance stopped at once, without writing");
            }
        }
        // Instances that ended by themselves: fenced (someone else writes the journal) gives
        // the partition back; any other failure stops the process, as it stops an engine.
        let finished: Vec<u32> = held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        let mut failure = None;
        for p in finished {
            let Some(h) = held.remove(&p) else { continue };
            let key = contract::lease_partition_key(&p.to_string());
            let outcome = h
                .task
                .await
                .unwrap_or_else(|e| Err(EngineError::Task(e.to_string())));
            let _ = kv.delete_expect_revision(&key, Some(h.revision)).await;
            match outcome {
                Err(EngineError::Journal(e @ JournalError::Fenced { .. })) => {
                    ownership.changed(Change::Fenced, 1, held.len());
                    error!(partition = p, epoch = h.epoch, error = %e, "partition fenced: another engine owns it now; dropped");
                }
                Err(EngineError::Lease(e @ LeaseError::Lost(_))) => {
                    ownership.changed(Change::Lost, 1, held.len());
                    error!(partition = p, epoch = h.epoch, error = %e, "partition lease lost: its instance stopped before writing; dropped");
                }
                Ok(()) => {
                    ownership.changed(Change::Released, 1, held.len());
                    warn!(partition = p, "partition instance ended; lease given back")
                }
                Err(e) => {
                    error!(partition = p, error = %e, "partition instance failed: stopping the engine");
                    failure = Some(e);
                }
            }
        }
        if let Some(e) = failure {
            break Err(e);
        }
        let view = match read_view(&kv).await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "lease bucket not readable; retrying at the next round");
                continue;
            }
        };
        let mut releasing = Vec::new();
        for action in balance::decide(&view, &cfg.engine_id, PARTITIONS) {
            match action {
                balance::Action::Take(p) => {
                    let key = contract::lease_partition_key(&p.to_string());
                    let sent = Instant::now();
                    match kv.create(&key, value.clone()).await {
                        Ok(revision) => {
                            let lease = Confirmed::new(sent, ttl);
                            held.insert(p, start(cfg, shared, p, revision, lease));
                            ownership.changed(Change::Taken, 1, held.len());
                        }
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                        Err(e) => {
                            warn!(partition = p, error = %e, "partition not taken; retrying at the next round")
                        }
                    }
                }
                balance::Action::Release(p) => {
                    if let Some(h) = held.remove(&p) {
                        info!(partition = p, "rebalancing: giving the partition back");
                        releasing.push((p, h));
                        ownership.changed(Change::Released, 1, held.len());
                    }
                }
            }
        }
        // Drained together: one after the other, the round (and so the renewal of every
        // other lease) would wait for each drain in turn.
        let stops = releasing.into_iter().map(|(p, h)| stop(&kv, p, h, cfg));
        futures::future::join_all(stops).await;
        if !ready_once {
            ready_once = all_ready(&mut held);
            if ready_once {
                shared.metrics.health.set_consumer_bound(true);
                shared.metrics.health.set_recovery_finished();
                shared.metrics.health.set_intake_subscribed(true);
                info!(engine_id = %cfg.engine_id, partitions = ?held.keys().collect::<Vec<_>>(), "engine ready");
            }
        }
    };
    shared.metrics.health.set_intake_subscribed(false);
    let released = held.len();
    let stops = held.into_iter().map(|(p, h)| stop(&kv, p, h, cfg));
    futures::future::join_all(stops).await;
    ownership.changed(Change::Released, released, 0);
    let _ = kv.delete(&member_key).await;
    ended
}

/// Starts the instance of partition `p`, owned at `epoch`.
fn start(cfg: &Config, shared: &Shared, p: u32, epoch: u64, lease: Confirmed) -> Held {
    let mut pcfg = cfg.clone();
    pcfg.engine_id = partition_id(p);
    pcfg.partition = Some(p);
    pcfg.symbols.retain(|s, _| partition_of(s) == p);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let shared = shared.clone();
    let instance_lease = lease.clone();
    info!(partition = p, epoch, symbols = ?pcfg.symbols.keys().collect::<Vec<_>>(), "partition taken: recovering it");
    let task = tokio::spawn(async move {
        run::serve(
            pcfg,
            &shared,
            Instance::Partition {
                epoch,
                ready: ready_tx,
                lease: instance_lease,
            },
            async {
                let _ = stop_rx.await;
            },
            std::future::pending(),
        )
        .await
    });
    Held {
        revision: epoch,
        epoch,
        lease,
        stop: Some(stop_tx),
        ready: Some(ready_rx),
        task,
    }
}

/// Drains the instance of `p` (as SIGTERM drains an engine), then deletes its lease at our
/// revision so that another engine takes it at once.
async fn stop(kv: &kv::Store, p: u32, mut h: Held, cfg: &Config) {
    if let Some(s) = h.stop.take() {
        let _ = s.send(());
    }
    let limit = Duration::from_millis(cfg.shutdown_timeout_ms.saturating_mul(2));
    match tokio::time::timeout(limit, &mut h.task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            warn!(partition = p, error = %e, "partition instance failed while stopping")
        }
        Ok(Err(e)) => warn!(partition = p, error = %e, "partition instance task failed"),
        Err(_) => {
            h.task.abort();
            warn!(
                partition = p,
                "partition instance did not stop in time: aborted"
            );
        }
    }
    let key = contract::lease_partition_key(&p.to_string());
    match kv.delete_expect_revision(&key, Some(h.revision)).await {
        Ok(()) => info!(partition = p, epoch = h.epoch, "partition given back"),
        Err(e) => warn!(partition = p, error = %e, "lease not deleted: it expires after its TTL"),
    }
}

/// Whether every instance started so far serves (polled each round: a round never waits
/// for a recovery, so that renewals keep their period).
fn all_ready(held: &mut BTreeMap<u32, Held>) -> bool {
    let mut all = !held.is_empty();
    for h in held.values_mut() {
        if let Some(r) = h.ready.as_mut() {
            match r.try_recv() {
                Ok(()) => h.ready = None,
                Err(_) => all = false,
            }
        }
    }
    all
}

/// Members and owners, read from the lease bucket now.
async fn read_view(kv: &kv::Store) -> Result<balance::View, String> {
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut view = balance::View::default();
    for key in keys {
        if let Some(id) = key.strip_prefix(contract::LEASE_MEMBER_KEY_PREFIX) {
            view.members.insert(id.to_string());
        } else if let Some(p) = key.strip_prefix(contract::LEASE_PARTITION_KEY_PREFIX) {
            let Ok(p) = p.parse::<u32>() else { continue };
            let holder = kv
                .get(&key)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|v| Holder::decode(&v));
            if let Some(h) = holder {
                view.owners.insert(p, h.engine_id);
            }
        }
    }
    Ok(view)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
