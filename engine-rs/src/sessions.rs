//! Orchestrator sessions with cancel on disconnect (`schemas/bridge/v1/session.proto`): the pure
//! core. No I/O; time is passed in (`now`: a monotonic [`Instant`] for the grace, Unix ns for
//! what is written down), so every rule below is tested without sleeping.
//!
//! What one engine knows of each session: its record (the KV bucket `bridge_sessions`, key
//! [`crate::contract::session_key`]; written by the engine that served SessionOpen or
//! SessionClose, or that declared the session lost; every engine watches the bucket) and, while
//! it is open, when this engine last saw it alive: its open or renewal, a heartbeat, or this
//! engine's own start or reconnect (an engine that could not see heartbeats does not count its
//! blindness against anyone: the grace restarts from when it can see again).
//!
//! An open session is lost at `last seen + grace`. The first engine to get there declares it:
//! it cancels ITS resting orders of the session (when `cancel_on_disconnect`), then writes the
//! record back ended (`closed`, `lost`, `cancel_orders = cancel_on_disconnect`), conditional on
//! the revision it knows, so that a renewal written meanwhile wins. Every other engine cancels
//! its own orders of the session on its own timer or when it sees that record, whichever comes
//! first. A closed or lost record stays in the bucket as the key's latest revision: an engine
//! that was down when the session ended learns at its start that its recovered orders of the
//! session are to be canceled. Opening the id again (same signer) starts it afresh.
//!
//! Orders naming a session ([`Sessions::check_order`]): accepted while it is open (for the
//! signer that opened it); a closed or lost session, or one this engine does not know, is
//! REJECTED (INVALID_FIELD, field `session_id`, rule `open_session`): a lost session stays lost
//! until its orchestrator opens it again, so that an order can never outlive the protection it
//! asked for.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::config::ConfigError;
use crate::proto::state::SessionRecord;
use crate::proto::v1::RejectReason;
use crate::validate::{echo, valid_id, Rejection};

pub mod store;
pub mod watch;

/// The longest session id: `[A-Za-z0-9_-]{1,64}` (contract `SESSION_ID_PATTERN`).
pub const MAX_SESSION_ID_BYTES: usize = 64;

/// Heartbeats per grace: a session heartbeats every `grace / HEARTBEATS_PER_GRACE`, so that up
/// to three lost heartbeats in a row are not a disconnect.
pub const HEARTBEATS_PER_GRACE: u32 = 4;

/// The rule of an order naming a session that is not open (orders.proto).
pub const RULE_OPEN_SESSION: &str = "open_session";

/// The rule of an order naming a session another identity opened.
pub const RULE_SESSION_OWNER: &str = "session_owner";

/// True when `id` can be a session id (a subject token and a KV key part).
pub fn valid_session_id(id: &str) -> bool {
    valid_id(id, MAX_SESSION_ID_BYTES)
}

/// The grace bounds (engine knobs `session_default_grace_ms`, `session_min_grace_ms`,
/// `session_max_grace_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraceBounds {
    pub default_ms: u32,
    pub min_ms: u32,
    pub max_ms: u32,
}

impl GraceBounds {
    /// The grace in force for a requested one: 0 = the default; clamped to [min, max].
    pub fn in_force(&self, requested_ms: u32) -> u32 {
        let wanted = if requested_ms == 0 {
            self.default_ms
        } else {
            requested_ms
        };
        wanted.clamp(self.min_ms, self.max_ms.max(self.min_ms))
    }
}

impl crate::config::Config {
    /// The grace bounds of the session knobs: each at least 1 ms and at most `u32::MAX` ms
    /// (SessionAck.grace_ms), the minimum not above the maximum, the default within them.
    pub fn session_grace(&self) -> Result<GraceBounds, ConfigError> {
        let knob = |field: &str, value: u64| {
            u32::try_from(value)
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| ConfigError::Value {
                    field: field.into(),
                    value: value.to_string(),
                    reason: format!("must be between 1 and {} ms", u32::MAX),
                })
        };
        let bounds = GraceBounds {
            default_ms: knob("session_default_grace_ms", self.session_default_grace_ms)?,
            min_ms: knob("session_min_grace_ms", self.session_min_grace_ms)?,
            max_ms: knob("session_max_grace_ms", self.session_max_grace_ms)?,
        };
        if bounds.min_ms > bounds.max_ms {
            return Err(ConfigError::Value {
                field: "session_min_grace_ms".into(),
                value: bounds.min_ms.to_string(),
                reason: "must not exceed session_max_grace_ms".into(),
            });
        }
        if !(bounds.min_ms..=bounds.max_ms).contains(&bounds.default_ms) {
            return Err(ConfigError::Value {
                field: "session_default_grace_ms".into(),
                value: bounds.default_ms.to_string(),
                reason: "must be within session_min_grace_ms and session_max_grace_ms".into(),
            });
        }
        Ok(bounds)
    }
}

/// How often a session with this grace heartbeats.
pub fn heartbeat_ms(grace_ms: u32) -> u32 {
    (grace_ms / HEARTBEATS_PER_GRACE).max(1)
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    /// Closed by its orchestrator (SessionClose).
    Closed,
    /// No heartbeat for its grace: declared lost by an engine.
    Lost,
}

impl State {
    /// The state a record says.
    pub fn of(record: &SessionRecord) -> State {
        match (record.closed, record.lost) {
            (false, _) => State::Open,
            (true, false) => State::Closed,
            (true, true) => State::Lost,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::Lost => "lost",
        }
    }
}

/// One session as this engine knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub record: SessionRecord,
    /// KV revision of the record (0: written by nobody yet, e.g. a loss not yet stored).
    pub revision: u64,
    /// Open sessions: when this engine last saw it alive.
    last_seen: Option<Instant>,
}

impl Session {
    pub fn state(&self) -> State {
        State::of(&self.record)
    }

    pub fn grace(&self) -> Duration {
        Duration::from_millis(u64::from(self.record.grace_ms))
    }

    /// When an open session is lost unless a heartbeat comes first.
    pub fn deadline(&self) -> Option<Instant> {
        self.last_seen.map(|seen| seen + self.grace())
    }
}

/// What applying a record changed, for this engine's orders of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing (a revision already applied, or older).
    Unchanged,
    /// Opened, or renewed: its grace starts now.
    Opened,
    /// Ended (closed or lost); `cancel`: cancel this engine's resting orders of it now;
    /// `was_open`: it was open here until now (else it ended before, or this engine did not
    /// know it: an engine starting, or a second ending such as a close after a loss).
    Ended {
        state: State,
        cancel: bool,
        was_open: bool,
    },
}

/// Every session this engine knows, and the open ones by deadline.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
    deadlines: BTreeSet<(Instant, String)>,
}

impl Sessions {
    pub fn get(&self, id: &str) -> Option<&Session> {
        self.by_id.get(id)
    }

    /// True when `id` is open here.
    pub fn is_open(&self, id: &str) -> bool {
        self.by_id.get(id).is_some_and(|s| s.state() == State::Open)
    }

    /// Open sessions.
    pub fn open_count(&self) -> usize {
        self.deadlines.len()
    }

    fn unschedule(&mut self, id: &str) {
        if let Some(deadline) = self.by_id.get(id).and_then(Session::deadline) {
            self.deadlines.remove(&(deadline, id.to_string()));
        }
    }

    /// (Re)sets an open session's last sign of life.
    fn seen(&mut self, id: &str, now: Instant) {
        self.unschedule(id);
        if let Some(s) = self.by_id.get_mut(id) {
            let seen = s.last_seen.map_or(now, |t| t.max(now));
            s.last_seen = Some(seen);
            self.deadlines.insert((seen + s.grace(), id.to_string()));
        }
    }

    /// A record from the bucket (the watch, a read, or this engine's own write) at `revision`.
    /// An open record (re)starts the grace at `now`; an ended one stops it and says whether
    /// this engine's orders of the session are to be canceled.
    pub fn apply(&mut self, record: SessionRecord, revision: u64, now: Instant) -> Applied {
        let id = record.session_id.clone();
        let before = self.by_id.get(&id).map(|s| (s.revision, s.state()));
        if let Some((known, _)) = before {
            if revision != 0 && known >= revision {
                return Applied::Unchanged;
            }
        }
        self.unschedule(&id);
        let state = State::of(&record);
        let cancel = record.cancel_orders;
        self.by_id.insert(
            id.clone(),
            Session {
                record,
                revision,
                last_seen: None,
            },
        );
        match state {
            State::Open => {
                self.seen(&id, now);
                Applied::Opened
            }
            ended => match before {
                // Already ended here without an order left to cancel: nothing new.
                Some((_, was)) if was != State::Open && !cancel => Applied::Unchanged,
                _ => Applied::Ended {
                    state: ended,
                    cancel,
                    was_open: before.is_some_and(|(_, was)| was == State::Open),
                },
            },
        }
    }

    /// The key was deleted or purged (an operator): the session is forgotten; its orders stay.
    pub fn forget(&mut self, id: &str) -> Option<Session> {
        self.unschedule(id);
        self.by_id.remove(id)
    }

    /// A heartbeat of `id` at `now`; false when it is not open here.
    pub fn heartbeat(&mut self, id: &str, now: Instant) -> bool {
        if !self.is_open(id) {
            return false;
        }
        self.seen(id, now);
        true
    }

    /// This engine could not see heartbeats until `now` (it started, or its connection came
    /// back): every open session's grace restarts at `now`.
    pub fn blind_until(&mut self, now: Instant) {
        let open: Vec<String> = self.deadlines.iter().map(|(_, id)| id.clone()).collect();
        for id in open {
            self.seen(&id, now);
        }
    }

    /// When the next open session is lost unless a heartbeat comes first.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The open sessions whose grace has run out at `now`, earliest first.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Declares the open session `id` lost: ended here at once (no second loss fires), and the
    /// record to write back (at [`Session::revision`]). `None` if it is not open.
    pub fn lose(&mut self, id: &str, now_unix_ns: i64, engine_id: &str) -> Option<SessionRecord> {
        if !self.is_open(id) {
            return None;
        }
        self.unschedule(id);
        let s = self.by_id.get_mut(id)?;
        s.last_seen = None;
        let r = &mut s.record;
        r.closed = true;
        r.lost = true;
        r.cancel_orders = r.cancel_on_disconnect;
        r.ended_at_unix_ns = now_unix_ns;
        r.engine_id = engine_id.into();
        Some(r.clone())
    }

    /// The revision this engine's own write of `id` was stored at.
    pub fn stored(&mut self, id: &str, revision: u64) {
        if let Some(s) = self.by_id.get_mut(id) {
            s.revision = s.revision.max(revision);
        }
    }

    /// May an order signed by `signer` ("" when signatures are not checked) name `session_id`?
    /// The id's pattern is the validator's (`crate::validate`); this is the session's state.
    pub fn check_order(&self, session_id: &str, signer: &str) -> Result<(), Rejection> {
        if session_id.is_empty() {
            return Ok(());
        }
        let refuse = |rule: &str, why: String| {
            Err(Rejection::single(
                RejectReason::InvalidField,
                "session_id",
                rule,
                why,
            ))
        };
        let id = echo(session_id);
        let Some(s) = self.by_id.get(session_id) else {
            return refuse(
                RULE_OPEN_SESSION,
                format!("session {id} is not open: open it (SessionOpen) before naming it"),
            );
        };
        match s.state() {
            State::Open if owned_by(&s.record, signer) => Ok(()),
            State::Open => refuse(
                RULE_SESSION_OWNER,
                format!("session {id} was opened by another identity"),
            ),
            State::Closed => refuse(
                RULE_OPEN_SESSION,
                format!("session {id} was closed; open it again to name it"),
            ),
            State::Lost => refuse(
                RULE_OPEN_SESSION,
                format!(
                    "session {id} was lost (no heartbeat for {} ms) and its orders canceled; \
                     open it again to name it",
                    s.record.grace_ms
                ),
            ),
        }
    }
}

/// True when `signer` may act on the session: signatures are not checked (either side empty),
/// or it is the signer that opened it.
pub fn owned_by(record: &SessionRecord, signer: &str) -> bool {
    record.signer.is_empty() || signer.is_empty() || record.signer == signer
}

#[cfg(test)]
mod tests;
