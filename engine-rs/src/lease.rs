//! Engine leases in the KV bucket `bridge_leases`: owns taking them at start-up, renewing them
//! while the engine runs, noticing when one is lost, and releasing them on a clean stop.
//!
//! Why: engines share the submit queue group and the ORDERS consumer but each keeps its own
//! book, so crossing orders that land at different engines never match. Until symbols are
//! partitioned between engines, an engine refuses to run next to another live engine:
//!
//! - Keys: `intake` (the submit queue group and the ORDERS consumer, which every engine shares:
//!   two engines with disjoint symbols would still receive, and wrongly reject, each other's
//!   orders) and `symbol.<SYM>` per configured symbol. Value: [`Holder`] as JSON.
//! - TTL: the bucket's `max_age` (`bridge/jetstream/kv-bridge_leases.json`), the one source of
//!   truth: a key nobody rewrites disappears after it. The owner rewrites (`kv.update` at the
//!   revision it last wrote) every TTL/3.
//! - Start: a key held by another engine id → refuse at once, naming the holder. Held by another
//!   instance of this engine id (a restart after kill -9, or a standby) → wait for it to expire,
//!   at most TTL + margin; renewed meanwhile → that instance is alive → refuse. Then every key
//!   is taken with the atomic `kv.create`, `intake` first, so that engines starting at the same
//!   time meet on one key.
//! - Renewal finds a key gone (it expired while this process was paused or cut off from NATS)
//!   → re-create it. Held by anyone else → the lease is lost: [`Lease::lost`] resolves and the
//!   engine stops serving at once.
//! - Clean stop: [`Lease::release`] deletes the keys, each only at the revision this engine
//!   wrote, so it never deletes a lease someone else has taken meanwhile.
//!
//! The decisions (`classify`, `plan`, `wait_step`, `after_conflict`) are pure functions, in
//! `lease/policy.rs`; this file does the I/O around them.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::contract;

pub mod peers;
mod policy;

pub use policy::*;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease bucket bridge_leases: {0}")]
    Bucket(String),
    #[error("{0}")]
    Refused(String),
    #[error("lease lost: {0}")]
    Lost(String),
    #[error("lease {key}: {source}")]
    Kv {
        key: String,
        source: async_nats::Error,
    },
}

/// The leases this engine holds, kept alive by a spawned renewal task.
pub struct Lease {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Vec<(String, u64)>>,
    lost: watch::Receiver<Option<String>>,
    kv: kv::Store,
    ttl: Duration,
}

impl Lease {
    /// Resolves once the lease is lost (someone else holds one of its keys, or the renewal task
    /// died); pending while it is held. Cancel-safe: poll it in a `select!` loop.
    pub async fn lost(&mut self) -> LeaseError {
        loop {
            if let Some(reason) = self.lost.borrow_and_update().clone() {
                return LeaseError::Lost(reason);
            }
            if self.lost.changed().await.is_err() {
                return LeaseError::Lost("the lease renewal task ended unexpectedly".into());
            }
        }
    }

    /// Clean stop: ends the renewals and deletes every key still ours (revision-checked), so
    /// that another engine can start at once. Failures only delay that by the TTL.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let held = match tokio::time::timeout(self.ttl, &mut self.task).await {
            Ok(Ok(held)) => held,
            _ => {
                warn!("lease renewal task did not stop; the leases expire after their TTL");
                return;
            }
        };
        let released = tokio::time::timeout(self.ttl, delete_all(&self.kv, &held)).await;
        match released {
            Ok(n) if n == held.len() => info!(keys = ?names(&held), "leases released"),
            _ => warn!(
                ttl_ms = millis(self.ttl),
                "not every lease could be released; the rest expire after their TTL"
            ),
        }
    }
}

fn names(held: &[(String, u64)]) -> Vec<&str> {
    held.iter().map(|(k, _)| k.as_str()).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Deletes each key at its revision; how many were deleted.
async fn delete_all(kv: &kv::Store, held: &[(String, u64)]) -> usize {
    let results = join_all(
        held.iter()
            .map(|(key, rev)| kv.delete_expect_revision(key, Some(*rev))),
    )
    .await;
    let mut n = 0;
    for ((key, _), r) in held.iter().zip(results) {
        match r {
            Ok(()) => n += 1,
            Err(e) => warn!(key, error = %e, "lease not released"),
        }
    }
    n
}

/// Takes every lease of this engine (waiting for an earlier instance's to expire, refusing if
/// another engine holds one) and starts renewing them. Call before recovery and subscribing.
pub async fn acquire(client: &async_nats::Client, cfg: &Config) -> Result<Lease, LeaseError> {
    let js = jetstream::new(client.clone());
    let kv = js
        .get_key_value(contract::LEASES_KV_BUCKET)
        .await
        .map_err(|e| {
            LeaseError::Bucket(format!(
                "{e}; provision it from bridge/jetstream/kv-bridge_leases.json"
            ))
        })?;
    let ttl = kv
        .status()
        .await
        .map_err(|e| LeaseError::Bucket(e.to_string()))?
        .max_age();
    if ttl.is_zero() {
        return Err(LeaseError::Bucket(
            "has no max_age, so a crashed engine's lease would never expire; re-provision it \
             from bridge/jetstream/kv-bridge_leases.json"
                .into(),
        ));
    }
    let me = Holder::this_process(&cfg.engine_id);
    let keys = lease_keys(cfg.symbols.keys());
    let held = match take_all(&kv, &keys, &me, ttl).await {
        Ok(held) => held,
        Err(e @ LeaseError::Refused(_)) => {
            error!(engine_id = %cfg.engine_id, error = %e, "engine refuses to start");
            return Err(e);
        }
        Err(e) => {
            error!(engine_id = %cfg.engine_id, error = %e, "could not take the engine's leases");
            return Err(e);
        }
    };
    let period = renew_every(ttl);
    info!(
        engine_id = %me.engine_id,
        instance = %me.instance,
        keys = ?keys,
        ttl_ms = millis(ttl),
        renew_every_ms = millis(period),
        "leases taken"
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    let (lost_tx, lost_rx) = watch::channel(None);
    let keeper = Keeper {
        kv: kv.clone(),
        value: me.encode(),
        me,
        held,
        ttl,
    };
    let task = tokio::spawn(keeper.run(period, stop_rx, lost_tx));
    Ok(Lease {
        stop: Some(stop_tx),
        task,
        lost: lost_rx,
        kv,
        ttl,
    })
}

/// The state of one key, read from the server.
async fn read(kv: &kv::Store, key: &str, me: &Holder) -> Result<KeyState, LeaseError> {
    let entry = kv.entry(key).await.map_err(|e| LeaseError::Kv {
        key: key.into(),
        source: e.into(),
    })?;
    Ok(classify(
        entry
            .as_ref()
            .map(|e| (e.operation, e.value.as_ref(), e.revision)),
        me,
    ))
}

/// `kv.create`: `Ok(revision)` if taken (or found already ours), `Err(state)` if someone holds it.
async fn create(
    kv: &kv::Store,
    key: &str,
    value: &Bytes,
    me: &Holder,
) -> Result<Result<u64, KeyState>, LeaseError> {
    match kv.create(key, value.clone()).await {
        Ok(rev) => Ok(Ok(rev)),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            match read(kv, key, me).await? {
                KeyState::Ours { revision } => Ok(Ok(revision)),
                other => Ok(Err(other)),
            }
        }
        Err(e) if e.kind() == kv::CreateErrorKind::InvalidKey => Err(LeaseError::Refused(format!(
            "{} cannot be a lease key: symbols may only use A-Z a-z 0-9 - _ / = .",
            describe(key)
        ))),
        Err(e) => Err(LeaseError::Kv {
            key: key.into(),
            source: e.into(),
        }),
    }
}

/// Start-up: look at every key, wait for another instance of this engine, then create them all.
/// A key someone creates between the look and the create starts another round; the few rounds
/// allowed end in a refusal if engines keep starting at the same time.
async fn take_all(
    kv: &kv::Store,
    keys: &[String],
    me: &Holder,
    ttl: Duration,
) -> Result<Vec<(String, u64)>, LeaseError> {
    const ROUNDS: usize = 4;
    let value = me.encode();
    for _ in 0..ROUNDS {
        let mut states = Vec::with_capacity(keys.len());
        for key in keys {
            states.push((key.clone(), read(kv, key, me).await?));
        }
        match plan(&states, ttl) {
            Plan::Refuse(reason) => return Err(LeaseError::Refused(reason)),
            Plan::Wait(waits) => {
                wait_for_expiry(kv, waits, me, ttl).await?;
                continue;
            }
            Plan::Take => {}
        }
        let mut taken: Vec<(String, u64)> = Vec::with_capacity(keys.len());
        let mut raced = false;
        for key in keys {
            match create(kv, key, &value, me).await {
                Ok(Ok(rev)) => taken.push((key.clone(), rev)),
                Ok(Err(_)) => {
                    raced = true;
                    break;
                }
                Err(e) => {
                    delete_all(kv, &taken).await;
                    return Err(e);
                }
            }
        }
        if !raced {
            return Ok(taken);
        }
        // Someone took a key since we looked: give back what we took, look again.
        delete_all(kv, &taken).await;
    }
    Err(LeaseError::Refused(format!(
        "could not take the leases of engine {} in {ROUNDS} rounds: other engines keep taking \
         them at the same time; start one engine at a time",
        me.engine_id
    )))
}

/// Waits until every key of `waits` (held by another instance of this engine id) has expired;
/// refuses if one is renewed twice meanwhile (its holder is alive) or outlives [`wait_limit`]
/// after its last rewrite.
async fn wait_for_expiry(
    kv: &kv::Store,
    waits: Vec<(String, Holder, u64)>,
    me: &Holder,
    ttl: Duration,
) -> Result<(), LeaseError> {
    let limit = wait_limit(ttl);
    let started = Instant::now();
    let previous = &waits[0].1;
    warn!(
        engine_id = %me.engine_id,
        previous_instance = %previous.instance,
        previous_host = %previous.host,
        previous_pid = previous.pid,
        keys = ?waits.iter().map(|(k, _, _)| k.as_str()).collect::<Vec<_>>(),
        ttl_ms = millis(ttl),
        wait_limit_ms = millis(limit),
        "leases held by another instance of this engine (a restart after a crash, or a standby): \
         waiting for them to expire"
    );
    // Per key: the revision waited on, and whether it was rewritten once already. One rewrite
    // is allowed (a renewal in flight when its holder died, or a lagging first read); the key
    // then gets a full wait limit again from that moment.
    let mut pending: Vec<_> = waits
        .into_iter()
        .map(|(key, holder, revision)| (key, holder, revision, false))
        .collect();
    let mut deadline = started + limit;
    loop {
        let mut still = Vec::with_capacity(pending.len());
        for (key, holder, revision, renewed) in pending {
            match wait_step(&key, revision, &read(kv, &key, me).await?, ttl) {
                WaitStep::Expired => {}
                WaitStep::Waiting => still.push((key, holder, revision, renewed)),
                WaitStep::Renewed(now, _) if !renewed => {
                    deadline = deadline.max(Instant::now() + limit);
                    still.push((key, holder, now, true));
                }
                WaitStep::Renewed(_, reason) | WaitStep::Alive(reason) => {
                    return Err(LeaseError::Refused(reason))
                }
            }
        }
        if still.is_empty() {
            info!(
                waited_ms = millis(started.elapsed()),
                "the other instance's leases expired: taking over"
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let (key, holder, _, _) = &still[0];
            return Err(LeaseError::Refused(format!(
                "{} is still held by {holder} {} after this instance began to wait, although \
                 the lease TTL is {}; is the bucket's max_age what \
                 bridge/jetstream/kv-bridge_leases.json says?",
                describe(key),
                secs(limit),
                secs(ttl)
            )));
        }
        pending = still;
        tokio::time::sleep(poll_every(ttl)).await;
    }
}

/// The renewal task: rewrites every key each period until told to stop or the lease is lost.
struct Keeper {
    kv: kv::Store,
    value: Bytes,
    me: Holder,
    held: Vec<(String, u64)>,
    ttl: Duration,
}

impl Keeper {
    /// Returns the keys still held, at their last revision (for [`Lease::release`]).
    async fn run(
        mut self,
        period: Duration,
        mut stop: oneshot::Receiver<()>,
        lost: watch::Sender<Option<String>>,
    ) -> Vec<(String, u64)> {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return self.held,
                _ = tick.tick() => {
                    // A round that hangs (no stream leader) must not delay the next one forever.
                    match tokio::time::timeout(period, self.renew()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(reason)) => {
                            error!(engine_id = %self.me.engine_id, reason = %reason, "lease lost: stopping at once");
                            lost.send_replace(Some(reason));
                            return Vec::new();
                        }
                        Err(_) => warn!(timeout_ms = millis(period), "lease renewal timed out; retrying at the next renewal"),
                    }
                }
            }
        }
    }

    /// One renewal of every key. `Err(reason)`: the lease is lost.
    async fn renew(&mut self) -> Result<(), String> {
        let results = join_all(
            self.held
                .iter()
                .map(|(key, rev)| self.kv.update(key, self.value.clone(), *rev)),
        )
        .await;
        for (i, result) in results.into_iter().enumerate() {
            let key = self.held[i].0.clone();
            match result {
                Ok(rev) => self.held[i].1 = rev,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    if let Some(rev) = self.resolve(&key).await? {
                        self.held[i].1 = rev;
                    }
                }
                Err(e) => {
                    warn!(key, error = %e, "lease renewal failed; retrying at the next renewal")
                }
            }
        }
        Ok(())
    }

    /// A key not at our revision: adopt, re-create, or report the loss. `Ok(None)`: could not
    /// tell now (NATS trouble); the next renewal tries again.
    async fn resolve(&self, key: &str) -> Result<Option<u64>, String> {
        let state = match read(&self.kv, key, &self.me).await {
            Ok(s) => s,
            Err(e) => {
                warn!(key, error = %e, "lease check failed; retrying at the next renewal");
                return Ok(None);
            }
        };
        match after_conflict(key, &state, self.ttl) {
            Renewal::Adopt(rev) => Ok(Some(rev)),
            Renewal::Lost(reason) => Err(reason),
            Renewal::Recreate => match create(&self.kv, key, &self.value, &self.me).await {
                Ok(Ok(rev)) => {
                    warn!(
                        key,
                        ttl_ms = millis(self.ttl),
                        "lease had expired (this engine did not renew it within the TTL: paused, \
                         or cut off from NATS); nobody else took it, so it is taken again"
                    );
                    Ok(Some(rev))
                }
                Ok(Err(state)) => match after_conflict(key, &state, self.ttl) {
                    Renewal::Lost(reason) => Err(reason),
                    Renewal::Adopt(rev) => Ok(Some(rev)),
                    Renewal::Recreate => Ok(None),
                },
                Err(e) => {
                    warn!(key, error = %e, "lease re-creation failed; retrying at the next renewal");
                    Ok(None)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
