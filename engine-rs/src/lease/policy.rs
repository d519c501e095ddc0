//! The lease decisions, pure: who holds a key ([`Holder`], [`classify`]), what start-up does
//! about the keys it found ([`plan`], [`wait_step`]), what a renewal conflict means
//! ([`after_conflict`]), the refusal text, and the timing derived from the TTL.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::contract;

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

    pub(crate) fn encode(&self) -> Bytes {
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
pub(crate) fn describe(key: &str) -> String {
    if key == contract::LEASE_INTAKE_KEY {
        "the intake (submit queue group and ORDERS consumer)".into()
    } else if let Some(symbol) = contract::symbol_of_lease_key(key) {
        format!("symbol {symbol}")
    } else {
        format!("lease key {key}")
    }
}

pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The refusal: which keys are served by which engine, and what is supported today.
pub(crate) fn refusal(conflicts: &[(&str, Option<&Holder>)], ttl: Duration) -> String {
    // Symbols first (the conflict the operator configured), the intake last; grouped by holder.
    let mut ordered: Vec<_> = conflicts.to_vec();
    ordered.sort_by_key(|(key, _)| *key == contract::LEASE_INTAKE_KEY);
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

pub(crate) fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The keys an engine with `symbols` holds, `intake` first.
pub fn lease_keys<'a>(symbols: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    std::iter::once(contract::LEASE_INTAKE_KEY.to_string())
        .chain(symbols.into_iter().map(|s| contract::lease_symbol_key(s)))
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

pub(crate) fn poll_every(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(20), Duration::from_millis(250))
}
