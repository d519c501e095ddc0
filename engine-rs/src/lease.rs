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
//! The decisions (`classify`, `plan`, `wait_step`, `after_conflict`) are pure functions.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::subjects;

/// Who holds a lease: the value of a key in `bridge_leases`, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub engine_id: String,
    /// Random per process: tells a restarted or standby instance of one engine id apart from
    /// the instance that wrote the lease.
    pub instance: String,
    pub host: String,
    pub pid: u32,
    /// When this instance took the lease (Unix milliseconds, by its own clock).
    pub taken_unix_ms: u64,
}

impl Holder {
    /// The holder this process writes.
    pub fn this_process(engine_id: &str) -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        let taken_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Holder {
            engine_id: engine_id.into(),
            instance: format!("{:016x}", fastrand::u64(..)),
            host,
            pid: std::process::id(),
            taken_unix_ms,
        }
    }

    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// `None` for a value that is not a holder (written by something else).
    pub fn decode(value: &[u8]) -> Option<Holder> {
        serde_json::from_slice(value).ok()
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "engine {} (instance {}, host {}, pid {})",
            self.engine_id, self.instance, self.host, self.pid
        )
    }
}

/// What a lease key holds, seen from this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Absent, deleted, purged or expired.
    Free,
    /// Written by this very process (a retried write whose first attempt landed).
    Ours { revision: u64 },
    /// Held by another instance of this engine id: a crashed predecessor, or one still alive.
    SameEngine { holder: Holder, revision: u64 },
    /// Held by another engine id (`None`: a value that is not a holder at all).
    OtherEngine {
        holder: Option<Holder>,
        revision: u64,
    },
}

/// Classifies a key's latest entry (`operation`, value, revision), if it has one.
pub fn classify(entry: Option<(kv::Operation, &[u8], u64)>, me: &Holder) -> KeyState {
    let (value, revision) = match entry {
        None | Some((kv::Operation::Delete | kv::Operation::Purge, _, _)) => return KeyState::Free,
        Some((kv::Operation::Put, value, revision)) => (value, revision),
    };
    match Holder::decode(value) {
        Some(h) if h.engine_id == me.engine_id && h.instance == me.instance => {
            KeyState::Ours { revision }
        }
        Some(holder) if holder.engine_id == me.engine_id => {
            KeyState::SameEngine { holder, revision }
        }
        holder => KeyState::OtherEngine { holder, revision },
    }
}

/// What start-up does next, given every key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every key is free (or already ours): create them.
    Take,
    /// Wait for these keys (key, holder, revision) of another instance of this engine id to
    /// expire.
    Wait(Vec<(String, Holder, u64)>),
    /// Another engine serves some of them: this message says which.
    Refuse(String),
}

/// Another engine anywhere → refuse; else another instance of this engine → wait; else take.
pub fn plan(states: &[(String, KeyState)], ttl: Duration) -> Plan {
    let conflicts: Vec<(&str, Option<&Holder>)> = states
        .iter()
        .filter_map(|(key, s)| match s {
            KeyState::OtherEngine { holder, .. } => Some((key.as_str(), holder.as_ref())),
            _ => None,
        })
        .collect();
    if !conflicts.is_empty() {
        return Plan::Refuse(refusal(&conflicts, ttl));
    }
    let waits: Vec<_> = states
        .iter()
        .filter_map(|(key, s)| match s {
            KeyState::SameEngine { holder, revision } => {
                Some((key.clone(), holder.clone(), *revision))
            }
            _ => None,
        })
        .collect();
    if waits.is_empty() {
        Plan::Take
    } else {
        Plan::Wait(waits)
    }
}

/// One look at a key this instance waits for (held at `waited_revision` by another instance of
/// this engine id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitStep {
    /// Gone: it can be taken.
    Expired,
    /// Unchanged: keep waiting.
    Waiting,
    /// Rewritten by the same engine id: once can be a renewal that was in flight when its
    /// holder died; twice means the holder is alive (see [`wait_for_expiry`]).
    Renewed(u64, String),
    /// Taken by another engine: refuse with this message.
    Alive(String),
}

pub fn wait_step(key: &str, waited_revision: u64, now: &KeyState, ttl: Duration) -> WaitStep {
    match now {
        KeyState::Free | KeyState::Ours { .. } => WaitStep::Expired,
        KeyState::SameEngine { revision, .. } if *revision == waited_revision => WaitStep::Waiting,
        KeyState::SameEngine { holder, revision } => WaitStep::Renewed(
            *revision,
            format!(
            "{} is held by a live instance of this engine: {holder}. It renewed its lease while \
             this instance waited for it to expire; two instances of engine {} may not run at \
             once: stop one of them",
            describe(key),
            holder.engine_id
        ),
        ),
        KeyState::OtherEngine { holder, .. } => {
            WaitStep::Alive(refusal(&[(key, holder.as_ref())], ttl))
        }
    }
}

/// What a renewal does when its key is no longer at the revision it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The key expired (this process was paused or cut off longer than the TTL): create it.
    Recreate,
    /// Our own earlier write landed although its answer was lost: continue from here.
    Adopt(u64),
    /// Someone else holds it now: the lease is lost, with this message.
    Lost(String),
}

pub fn after_conflict(key: &str, now: &KeyState, ttl: Duration) -> Renewal {
    let taken_by = match now {
        KeyState::Free => return Renewal::Recreate,
        KeyState::Ours { revision } => return Renewal::Adopt(*revision),
        KeyState::SameEngine { holder, .. } => holder.to_string(),
        KeyState::OtherEngine {
            holder: Some(holder),
            ..
        } => holder.to_string(),
        KeyState::OtherEngine { holder: None, .. } => "an unreadable lease value".into(),
    };
    Renewal::Lost(format!(
        "{} is now held by {taken_by}: this engine did not renew its lease within the TTL \
         ({}; paused, or cut off from NATS?) and another engine took over. Stopping at once so \
         that two engines never serve it together",
        describe(key),
        secs(ttl)
    ))
}

/// Human name of a lease key.
fn describe(key: &str) -> String {
    if key == subjects::LEASE_INTAKE_KEY {
        "the intake (submit queue group and ORDERS consumer)".into()
    } else if let Some(symbol) = key.strip_prefix("symbol.") {
        format!("symbol {symbol}")
    } else {
        format!("lease key {key}")
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The refusal: which keys are served by which engine, and what is supported today.
fn refusal(conflicts: &[(&str, Option<&Holder>)], ttl: Duration) -> String {
    // Symbols first (the conflict the operator configured), the intake last; grouped by holder.
    let mut ordered: Vec<_> = conflicts.to_vec();
    ordered.sort_by_key(|(key, _)| *key == subjects::LEASE_INTAKE_KEY);
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (key, holder) in ordered {
        let who = holder.map_or("an unreadable lease value".into(), |h| h.to_string());
        match groups.iter_mut().find(|(w, _)| *w == who) {
            Some((_, keys)) => keys.push(describe(key)),
            None => groups.push((who, vec![describe(key)])),
        }
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(who, keys)| {
            let verb = if keys.len() == 1 { "is" } else { "are" };
            format!("{} {verb} served by {who}", join_and(&keys))
        })
        .collect();
    format!(
        "{}; this deployment supports one engine per symbol and one engine per intake today (every \
         engine shares the submit queue group and the ORDERS consumer), so only one engine may \
         run: stop it, or, if it is gone, wait for its lease to expire (TTL {})",
        parts.join("; "),
        secs(ttl)
    )
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The keys an engine with `symbols` holds, `intake` first.
pub fn lease_keys<'a>(symbols: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    std::iter::once(subjects::LEASE_INTAKE_KEY.to_string())
        .chain(symbols.into_iter().map(|s| subjects::lease_symbol_key(s)))
        .collect()
}

/// How long start-up waits for another instance's lease to expire: the TTL plus a margin for
/// the server's expiry timer (it fires a little after max_age), replication and our polling.
pub fn wait_limit(ttl: Duration) -> Duration {
    ttl + (ttl / 4).max(Duration::from_secs(2))
}

/// How often the owner rewrites its keys: three chances per TTL.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 3
}

fn poll_every(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

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
        .get_key_value(subjects::LEASES_KV_BUCKET)
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
mod tests {
    use super::*;

    fn holder(engine_id: &str, instance: &str) -> Holder {
        Holder {
            engine_id: engine_id.into(),
            instance: instance.into(),
            host: "h1".into(),
            pid: 42,
            taken_unix_ms: 1_700_000_000_000,
        }
    }

    fn put(h: &Holder, revision: u64) -> (Vec<u8>, u64) {
        (serde_json::to_vec(h).unwrap(), revision)
    }

    const TTL: Duration = Duration::from_secs(5);

    /// A free, deleted, purged (expired with a marker) or own key is not a conflict; a key of
    /// another engine id, or one that is not a holder at all, is; one of another instance of
    /// this engine id is told apart.
    #[test]
    fn classify_by_engine_and_instance() {
        let me = holder("engine-1", "a");
        assert_eq!(classify(None, &me), KeyState::Free);
        for op in [kv::Operation::Delete, kv::Operation::Purge] {
            assert_eq!(classify(Some((op, b"", 3)), &me), KeyState::Free);
        }
        let (v, r) = put(&me, 4);
        assert_eq!(
            classify(Some((kv::Operation::Put, &v, r)), &me),
            KeyState::Ours { revision: 4 }
        );
        let older = holder("engine-1", "b");
        let (v, r) = put(&older, 5);
        assert_eq!(
            classify(Some((kv::Operation::Put, &v, r)), &me),
            KeyState::SameEngine {
                holder: older,
                revision: 5
            }
        );
        let other = holder("engine-2", "a");
        let (v, r) = put(&other, 6);
        assert_eq!(
            classify(Some((kv::Operation::Put, &v, r)), &me),
            KeyState::OtherEngine {
                holder: Some(other),
                revision: 6
            }
        );
        assert_eq!(
            classify(Some((kv::Operation::Put, b"not json", 7)), &me),
            KeyState::OtherEngine {
                holder: None,
                revision: 7
            }
        );
    }

    /// Held by another engine → refuse, naming it; by another instance of this engine → wait;
    /// free → take. Another engine anywhere wins over waiting.
    #[test]
    fn plan_refuses_waits_or_takes() {
        let other = holder("engine-2", "x");
        let older = holder("engine-1", "b");
        let free = |k: &str| (k.to_string(), KeyState::Free);
        assert_eq!(
            plan(&[free("intake"), free("symbol.AAPL")], TTL),
            Plan::Take
        );
        assert_eq!(
            plan(
                &[
                    free("intake"),
                    ("symbol.AAPL".into(), KeyState::Ours { revision: 1 })
                ],
                TTL
            ),
            Plan::Take
        );
        let waiting = [
            free("intake"),
            (
                "symbol.AAPL".into(),
                KeyState::SameEngine {
                    holder: older.clone(),
                    revision: 9,
                },
            ),
        ];
        assert_eq!(
            plan(&waiting, TTL),
            Plan::Wait(vec![("symbol.AAPL".into(), older.clone(), 9)])
        );
        let refused = [
            (
                "intake".into(),
                KeyState::OtherEngine {
                    holder: Some(other.clone()),
                    revision: 1,
                },
            ),
            (
                "symbol.AAPL".into(),
                KeyState::OtherEngine {
                    holder: Some(other.clone()),
                    revision: 2,
                },
            ),
            (
                "symbol.MSFT".into(),
                KeyState::SameEngine {
                    holder: older,
                    revision: 3,
                },
            ),
        ];
        let Plan::Refuse(msg) = plan(&refused, TTL) else {
            panic!("expected a refusal");
        };
        assert!(
            msg.starts_with(
                "symbol AAPL and the intake (submit queue group and ORDERS consumer) are served \
                 by engine engine-2 (instance x, host h1, pid 42); this deployment supports one \
                 engine per symbol and one engine per intake today"
            ),
            "{msg}"
        );
        assert!(msg.contains("(TTL 5 s)"), "{msg}");
    }

    /// While waiting: gone → take; unchanged → wait; renewed → its holder is alive → refuse;
    /// taken by another engine → refuse naming it.
    #[test]
    fn wait_step_follows_the_waited_revision() {
        let older = holder("engine-1", "b");
        assert_eq!(
            wait_step("intake", 9, &KeyState::Free, TTL),
            WaitStep::Expired
        );
        let same = |revision| KeyState::SameEngine {
            holder: older.clone(),
            revision,
        };
        assert_eq!(wait_step("intake", 9, &same(9), TTL), WaitStep::Waiting);
        let WaitStep::Renewed(10, msg) = wait_step("symbol.AAPL", 9, &same(10), TTL) else {
            panic!("expected a renewal");
        };
        assert!(
            msg.contains("symbol AAPL is held by a live instance"),
            "{msg}"
        );
        let taken = KeyState::OtherEngine {
            holder: Some(holder("engine-3", "z")),
            revision: 11,
        };
        let WaitStep::Alive(msg) = wait_step("intake", 9, &taken, TTL) else {
            panic!("expected a refusal");
        };
        assert!(msg.contains("served by engine engine-3"), "{msg}");
    }

    /// A renewal that finds its key moved on: expired → re-create; our own write → adopt;
    /// anyone else's → lost.
    #[test]
    fn renewal_conflicts() {
        assert_eq!(
            after_conflict("intake", &KeyState::Free, TTL),
            Renewal::Recreate
        );
        assert_eq!(
            after_conflict("intake", &KeyState::Ours { revision: 7 }, TTL),
            Renewal::Adopt(7)
        );
        let taken = KeyState::OtherEngine {
            holder: Some(holder("engine-2", "x")),
            revision: 8,
        };
        let Renewal::Lost(msg) = after_conflict("symbol.AAPL", &taken, TTL) else {
            panic!("expected a loss");
        };
        assert!(
            msg.starts_with("symbol AAPL is now held by engine engine-2"),
            "{msg}"
        );
        let standby = KeyState::SameEngine {
            holder: holder("engine-1", "c"),
            revision: 9,
        };
        assert!(matches!(
            after_conflict("intake", &standby, TTL),
            Renewal::Lost(_)
        ));
    }

    /// The intake comes first (engines starting together meet there), then one key per symbol;
    /// renewals leave three chances per TTL and the wait exceeds the TTL.
    #[test]
    fn keys_and_timing() {
        let symbols = ["AAPL".to_string(), "BTC-USD".to_string()];
        assert_eq!(
            lease_keys(&symbols),
            vec!["intake", "symbol.AAPL", "symbol.BTC-USD"]
        );
        assert!(renew_every(TTL) * 3 <= TTL && renew_every(TTL) > Duration::from_millis(1600));
        assert_eq!(wait_limit(TTL), Duration::from_secs(7));
        assert!(wait_limit(Duration::from_secs(60)) > Duration::from_secs(60));
        assert_eq!(poll_every(TTL), Duration::from_millis(250));
    }

    /// A holder survives its JSON round trip; its description names engine, instance and host.
    #[test]
    fn holder_round_trip_and_display() {
        let me = Holder::this_process("engine-1");
        assert_eq!(Holder::decode(&me.encode()), Some(me.clone()));
        assert_eq!(me.instance.len(), 16);
        assert_eq!(
            holder("engine-2", "x").to_string(),
            "engine engine-2 (instance x, host h1, pid 42)"
        );
    }
}
