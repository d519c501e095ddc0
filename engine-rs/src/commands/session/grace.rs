//! The grace timer of the engine's sessions and what an ended session does here: the sessions
//! bucket's watch (a session opened, closed or lost through any engine), the loss this engine
//! declares when a grace runs out, the cancel of this engine's resting orders of an ended
//! session (CANCELED, reason SESSION_LOST; published and written back like a cancel), and the
//! start-up load (every session known before the first order; the grace restarts now).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::proto::state::SessionRecord;
use crate::publish::Tagged;
use crate::runtime_config::watch::Event;
use crate::sessions::store::Written;
use crate::sessions::watch::{change, Change};
use crate::sessions::{Applied, State};
use crate::trace::Trace;

impl Engine {
    /// When a session's grace next runs out (`None`: no session to watch). See
    /// [`Engine::next_timer`].
    pub fn session_timer(&self) -> Option<tokio::time::Instant> {
        self.sessions
            .known
            .next_deadline()
            .map(tokio::time::Instant::from_std)
    }

    /// Declares lost every open session whose grace ran out by now, unless this engine could
    /// not see heartbeats meanwhile (then every grace restarts now).
    pub async fn on_session_timer(&mut self) -> Result<(), EngineError> {
        let now = Instant::now();
        if !self.session_sight(now) {
            return Ok(());
        }
        for id in self.sessions.known.due(now) {
            self.lose_session(&id).await?;
        }
        Ok(())
    }

    /// True when this engine has seen heartbeats all along since it last looked; false (and
    /// every open session's grace restarted at `now`) when it is disconnected or reconnected
    /// meanwhile: its blindness is counted against no one.
    pub(crate) fn session_sight(&mut self, now: Instant) -> bool {
        let connected = self.metrics.health.readiness().connected;
        let reconnects = self.metrics.reconnects();
        let desk = &mut self.sessions;
        if connected && reconnects == desk.reconnects {
            desk.blind = false;
            return true;
        }
        if !desk.blind && desk.known.open_count() > 0 {
            info!(
                connected,
                sessions = desk.known.open_count(),
                "this engine could not see heartbeats (its connection dropped): every session's \
                 grace restarts when it sees again"
            );
        }
        desk.blind = !connected;
        desk.reconnects = reconnects;
        desk.known.blind_until(now);
        false
    }

    /// The grace of `id` ran out here: cancel this engine's orders of it (when it asked for
    /// cancel on disconnect), then write the record back lost, unless the key moved on (a
    /// renewal, or another engine's loss: read it again).
    async fn lose_session(&mut self, id: &str) -> Result<(), EngineError> {
        let engine_id = self.cfg.engine_id.clone();
        let revision = self.sessions.known.get(id).map_or(0, |s| s.revision);
        let Some(record) = self.sessions.known.lose(id, now_ns(), &engine_id) else {
            return Ok(());
        };
        let canceled = if record.cancel_orders {
            self.cancel_session_orders(id, State::Lost).await?
        } else {
            0
        };
        self.metrics.sessions.ended(State::Lost, canceled);
        self.count_open_sessions();
        log_lost(&record, canceled, &engine_id);
        match self.sessions.store.update(&record, revision).await {
            Ok(Written::At(stored)) => self.sessions.known.stored(id, stored),
            Ok(Written::Conflict) => self.refresh_session(id).await?,
            Err(why) => error!(
                session_id = id,
                error = %why,
                "could not write the lost session back: the other engines declare the loss on \
                 their own timers; an engine started later will not know it was lost"
            ),
        }
        Ok(())
    }

    /// A revision of the sessions bucket (its watch), applied between commands.
    pub async fn on_session_event(&mut self, event: Event) -> Result<(), EngineError> {
        match change(event) {
            Change::Put(record, revision) => {
                let id = record.session_id.clone();
                let applied = self.sessions.known.apply(record, revision, Instant::now());
                self.session_effects(&id, applied).await?;
            }
            Change::Removed(id) => {
                if self.sessions.known.forget(&id).is_some() {
                    warn!(
                        session_id = id,
                        "session record deleted from the bucket: the session is forgotten; its \
                         resting orders stay, no longer canceled on disconnect"
                    );
                    self.count_open_sessions();
                }
            }
            Change::CaughtUp => debug!("sessions bucket: caught up"),
            Change::Foreign { key, revision } => {
                warn!(
                    key,
                    revision, "sessions bucket: not a session record; ignored"
                );
            }
        }
        Ok(())
    }

    /// What applying a record does here: an ended session's orders canceled when it says so
    /// (counted, logged). Returns how many were canceled.
    pub(crate) async fn session_effects(
        &mut self,
        id: &str,
        applied: Applied,
    ) -> Result<usize, EngineError> {
        self.count_open_sessions();
        let Applied::Ended {
            state,
            cancel,
            was_open,
        } = applied
        else {
            return Ok(0);
        };
        let canceled = if cancel {
            self.cancel_session_orders(id, state).await?
        } else {
            0
        };
        if was_open {
            self.metrics.sessions.ended(state, canceled);
        } else {
            self.metrics.sessions.canceled_more(state, canceled);
        }
        let ended_by = self
            .sessions
            .known
            .get(id)
            .map(|s| s.record.engine_id.clone())
            .unwrap_or_default();
        match (state, canceled) {
            (State::Lost, 1..) => warn!(
                session_id = id,
                canceled,
                declared_by = ended_by,
                "session lost (declared by another engine): its resting orders here canceled"
            ),
            (_, 1..) => warn!(
                session_id = id,
                canceled,
                end = state.label(),
                "session ended with cancel_orders: its resting orders here canceled"
            ),
            _ if was_open => info!(session_id = id, end = state.label(), "session ended"),
            _ => {}
        }
        Ok(canceled)
    }

    /// Cancels this engine's resting orders of session `id` (CANCELED, SESSION_LOST): each
    /// its own fact, published, then the records written back. Returns how many.
    pub(crate) async fn cancel_session_orders(
        &mut self,
        id: &str,
        state: State,
    ) -> Result<usize, EngineError> {
        let text = match state {
            State::Lost => {
                format!("session {id} lost: no heartbeat within its grace (cancel on disconnect)")
            }
            _ => format!("session {id} closed with cancel_orders"),
        };
        let now = now_ns();
        let touched = self.venue.cancel_session(id, &text, now)?;
        if touched.is_empty() {
            return Ok(0);
        }
        let traces: Vec<Trace> = touched
            .iter()
            .map(|t| Trace::recovered(&t.order.record.correlation_id))
            .collect();
        let groups: Vec<Vec<Tagged<'_>>> = touched
            .iter()
            .zip(&traces)
            .map(|(t, trace)| t.reports.iter().map(|r| (r, trace)).collect())
            .collect();
        self.commit(groups, touched.iter().map(|t| &t.order).collect())
            .await?;
        let mut symbols: BTreeMap<String, u32> = BTreeMap::new();
        for t in &touched {
            *symbols.entry(t.order.order().symbol.clone()).or_default() += 1;
        }
        for (symbol, events) in &symbols {
            self.md.touch(symbol, *events, now);
        }
        let count = touched.len();
        self.observe_books(symbols.keys().map(String::as_str));
        Ok(count)
    }

    /// The record of `id`: this engine's, or the bucket's when it does not know it open (an
    /// open through another engine its watch has not delivered yet), applied here.
    pub(crate) async fn known_session(&mut self, id: &str) -> Option<(SessionRecord, u64)> {
        if !self.sessions.known.is_open(id) {
            if let Err(e) = self.refresh_session(id).await {
                warn!(session_id = id, error = %e, "could not read the session record");
            }
        }
        self.sessions
            .known
            .get(id)
            .map(|s| (s.record.clone(), s.revision))
    }

    /// Reads the record of `id` from the bucket and applies it (with its effects).
    pub(crate) async fn refresh_session(&mut self, id: &str) -> Result<(), EngineError> {
        match self.sessions.store.load(id).await {
            Ok(Some((record, revision))) => {
                let applied = self.sessions.known.apply(record, revision, Instant::now());
                if applied == Applied::Opened {
                    debug!(session_id = id, "session learned from the bucket");
                }
                self.session_effects(id, applied).await?;
            }
            Ok(None) => {}
            Err(why) => warn!(session_id = id, error = %why, "could not read the session record"),
        }
        Ok(())
    }

    /// Start-up: applies the watch's events until it has delivered what the bucket holds (for
    /// at most `within`): every open session's grace starts now, and the resting orders this
    /// engine recovered of a session that ended while it was down are canceled. Then warns of
    /// resting orders naming a session the bucket does not know (not protected).
    pub async fn load_sessions(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
        within: Duration,
    ) -> Result<(), EngineError> {
        let deadline = tokio::time::sleep(within);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::CaughtUp) | None => break,
                    Some(event) => self.on_session_event(event).await?,
                },
                () = &mut deadline => {
                    warn!(within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX), "sessions bucket not read completely at start-up; serving on what arrived");
                    break;
                }
            }
        }
        self.sessions.known.blind_until(Instant::now());
        self.sessions.reconnects = self.metrics.reconnects();
        let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
        for o in self.venue.resting() {
            let id = &o.order().session_id;
            if !id.is_empty() && !self.sessions.known.is_open(id) {
                *unknown.entry(id.clone()).or_default() += 1;
            }
        }
        for (id, orders) in unknown {
            warn!(
                session_id = id,
                orders,
                "resting orders name a session that is not open in the bucket: not canceled on \
                 disconnect (runbooks/orders-left-resting.md)"
            );
        }
        info!(
            open = self.sessions.known.open_count(),
            "sessions loaded: every open session's grace starts now"
        );
        Ok(())
    }

    /// `bridge_engine_sessions_open`.
    fn count_open_sessions(&self) {
        self.metrics
            .sessions
            .open
            .set(i64::try_from(self.sessions.known.open_count()).unwrap_or(i64::MAX));
    }
}

/// The WARN line of a loss this engine declared.
fn log_lost(record: &SessionRecord, canceled: usize, engine_id: &str) {
    if record.cancel_orders {
        warn!(
            session_id = record.session_id,
            canceled,
            grace_ms = record.grace_ms,
            engine_id,
            "session lost: no heartbeat within its grace; its resting orders here canceled \
             (cancel on disconnect)"
        );
    } else {
        warn!(
            session_id = record.session_id,
            grace_ms = record.grace_ms,
            engine_id,
            "session lost: no heartbeat within its grace; its orders stay (cancel_on_disconnect \
             off)"
        );
    }
}
