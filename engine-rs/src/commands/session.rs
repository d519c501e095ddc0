//! Orchestrator sessions with cancel on disconnect (`schemas/bridge/v1/session.proto`; the
//! rules are [`crate::sessions`]'): `bridge.v1.session.open|close.<id>` (request-reply, signed
//! like an order operation; a session names no account, so the entitlement check is that the
//! signer is a trading identity), and the heartbeats (`bridge.v1.session.heartbeat.<id>`,
//! every engine gets each one).
//!
//! Submodules: [`grace`] (the grace timer, the watch of the bucket, what an ended session does
//! to this engine's orders, the start-up load) and [`gate`] (orders naming a session).
//!
//! Open: the record is written (a renewal overwrites it: the orchestrator's word is the
//! latest) and applied here at once; SessionAck says the grace in force and how often to
//! heartbeat. Close: the record is written back ended (conditional on the revision read, so
//! that it merges with a loss another engine declared meanwhile), with `cancel_orders` this
//! engine's resting orders of the session are canceled before the answer, and every other
//! engine cancels its own when it sees the record; `SessionAck.canceled` counts this engine's.
//! A session belongs to the signer that opened it: another identity can neither renew, close
//! nor name it (INVALID_FIELD, rule `session_owner`).

use std::time::Instant;

use prost::Message as _;
use tracing::{debug, info, warn};

use super::authorize::{SESSION_CLOSE_REQUEST, SESSION_OPEN_REQUEST};
use super::within;
use crate::config::Config;
use crate::engine::{now_ns, Engine};
use crate::error::{EngineError, SetupError};
use crate::proto::state::SessionRecord;
use crate::proto::v1::{self as pb, AckStatus, FieldError, RejectReason};
use crate::service::{Incoming, ServiceError};
use crate::sessions::store::{SessionStore, Written};
use crate::sessions::{
    heartbeat_ms, owned_by, valid_session_id, GraceBounds, Sessions, State, RULE_OPEN_SESSION,
    RULE_SESSION_OWNER,
};
use crate::trace::Trace;
use crate::validate::{echo, field_error, truncate};

pub mod gate;
pub mod grace;

/// Attempts of a close whose conditional write found the record moved on (each re-reads it).
const CLOSE_ATTEMPTS: usize = 3;

/// The engine's sessions: what it knows ([`Sessions`]), the bucket, the grace bounds, and what
/// it last saw of its own connection (a reconnect means it could not see heartbeats).
pub struct SessionDesk {
    pub(crate) known: Sessions,
    pub(crate) store: SessionStore,
    pub(crate) bounds: GraceBounds,
    /// `Metrics::reconnects` when last looked at.
    pub(crate) reconnects: u64,
    /// Not connected when last looked at.
    pub(crate) blind: bool,
}

impl SessionDesk {
    /// Binds to the provisioned sessions bucket.
    pub async fn bind(
        js: &async_nats::jetstream::Context,
        cfg: &Config,
    ) -> Result<SessionDesk, SetupError> {
        let bounds = cfg
            .session_grace()
            .map_err(|e| SetupError::new("session grace knobs", e))?;
        Ok(SessionDesk {
            known: Sessions::default(),
            store: SessionStore::bind(js, cfg).await?,
            bounds,
            reconnects: 0,
            blind: false,
        })
    }
}

/// The span of one session request.
fn session_span(trace: &Trace, session_id: &str) -> tracing::Span {
    tracing::info_span!(
        "request",
        correlation_id = trace.correlation_id.as_str(),
        trace_id = trace.trace_id.as_str(),
        session_id = truncate(session_id, crate::sessions::MAX_SESSION_ID_BYTES)
    )
}

/// The session id a request's subject names (its last token).
fn subject_id(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or("")
}

/// A session request that passed the checks: the signer ("" when signatures are not checked).
struct Taken<M> {
    request: M,
    signer: String,
}

/// What the checks of a session request found.
enum Take<M> {
    Passed(Taken<M>),
    /// REJECTED: this answer.
    Refused(pb::SessionAck),
    /// Not the message the endpoint takes: an endpoint error.
    Undecodable(ServiceError),
}

/// A REJECTED session answer.
fn refused(
    id: &str,
    reason: RejectReason,
    field_errors: Vec<FieldError>,
    text: String,
    engine_id: &str,
) -> pb::SessionAck {
    pb::SessionAck {
        session_id: truncate(id, crate::sessions::MAX_SESSION_ID_BYTES).into(),
        status: AckStatus::Rejected as i32,
        reason: reason as i32,
        field_errors,
        text,
        engine_id: engine_id.into(),
        ..Default::default()
    }
}

/// The REJECTED answer of field errors, its text theirs.
fn invalid(id: &str, errors: Vec<FieldError>, engine_id: &str) -> pb::SessionAck {
    let text = errors
        .iter()
        .map(|e| format!("{}: {} [{}]", e.field, e.message, e.rule))
        .collect::<Vec<_>>()
        .join("; ");
    refused(id, RejectReason::InvalidField, errors, text, engine_id)
}

/// The REJECTED answer of a session another identity opened.
fn not_owner(id: &str, engine_id: &str) -> pb::SessionAck {
    let error = field_error(
        "session_id",
        RULE_SESSION_OWNER,
        format!("session {} was opened by another identity", echo(id)),
    );
    invalid(id, vec![error], engine_id)
}

/// The REJECTED answer of a session store that could not be written.
fn store_down(id: &str, why: &str, engine_id: &str) -> pb::SessionAck {
    let text = format!("the session store is unavailable: {why}");
    refused(id, RejectReason::EngineUnavailable, vec![], text, engine_id)
}

impl Engine {
    /// A session opening.
    pub async fn on_session_open(&mut self, req: &Incoming) -> Result<(), EngineError> {
        let trace = Trace::of(req.msg().headers.as_ref());
        let span = session_span(&trace, subject_id(req.msg().subject.as_str()));
        within(span, self.session_open(req, &trace)).await
    }

    /// A session closing.
    pub async fn on_session_close(&mut self, req: &Incoming) -> Result<(), EngineError> {
        let trace = Trace::of(req.msg().headers.as_ref());
        let span = session_span(&trace, subject_id(req.msg().subject.as_str()));
        within(span, self.session_close(req, &trace)).await
    }

    /// A heartbeat (not a request: nothing to answer). The session id is the payload's, else
    /// the subject's.
    pub fn on_session_heartbeat(&mut self, msg: &async_nats::Message) {
        let now = Instant::now();
        self.session_sight(now);
        let id = pb::SessionHeartbeat::decode(msg.payload.clone())
            .ok()
            .map(|h| h.session_id)
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| subject_id(msg.subject.as_str()).to_string());
        if self.sessions.known.heartbeat(&id, now) {
            self.metrics.sessions.heartbeats.inc();
        } else {
            debug!(
                session_id = truncate(&id, crate::sessions::MAX_SESSION_ID_BYTES),
                "heartbeat of a session not open here: ignored"
            );
        }
    }

    async fn session_open(
        &mut self,
        incoming: &Incoming,
        trace: &Trace,
    ) -> Result<(), EngineError> {
        let engine_id = self.cfg.engine_id.clone();
        let Taken {
            request: open,
            signer,
        } = match self.take_session::<pb::SessionOpen>(incoming, trace, SESSION_OPEN_REQUEST, |r| {
            &r.session_id
        }) {
            Take::Passed(t) => t,
            Take::Refused(ack) => return self.answer_session(incoming, ack).await,
            Take::Undecodable(error) => {
                incoming.fail(error).await;
                return Ok(());
            }
        };
        let id = open.session_id.clone();
        let before = self.known_session(&id).await;
        if before.as_ref().is_some_and(|(r, _)| !owned_by(r, &signer)) {
            return self
                .answer_session(incoming, not_owner(&id, &engine_id))
                .await;
        }
        let grace_ms = self.sessions.bounds.in_force(open.grace_ms);
        let record = SessionRecord {
            session_id: id.clone(),
            grace_ms,
            cancel_on_disconnect: open.cancel_on_disconnect,
            opened_at_unix_ns: now_ns(),
            signer,
            engine_id: engine_id.clone(),
            ..Default::default()
        };
        let revision = match self.sessions.store.put(&record).await {
            Ok(revision) => revision,
            Err(why) => {
                warn!(error = %why, "session not opened: the session store refused the record");
                return self
                    .answer_session(incoming, store_down(&id, &why, &engine_id))
                    .await;
            }
        };
        let applied = self.sessions.known.apply(record, revision, Instant::now());
        self.session_effects(&id, applied).await?;
        let text = match before.as_ref().map(|(r, _)| State::of(r)) {
            None => "opened",
            Some(State::Open) => "renewed",
            Some(State::Closed) => "opened again after it was closed",
            Some(State::Lost) => "opened again after it was lost: its resting orders were canceled",
        };
        info!(
            grace_ms,
            heartbeat_ms = heartbeat_ms(grace_ms),
            cancel_on_disconnect = open.cancel_on_disconnect,
            requested_grace_ms = open.grace_ms,
            outcome = text,
            "session opened"
        );
        let ack = pb::SessionAck {
            session_id: id,
            status: AckStatus::Accepted as i32,
            grace_ms,
            heartbeat_ms: heartbeat_ms(grace_ms),
            engine_id,
            text: text.into(),
            ..Default::default()
        };
        self.answer_session(incoming, ack).await
    }

    async fn session_close(
        &mut self,
        incoming: &Incoming,
        trace: &Trace,
    ) -> Result<(), EngineError> {
        let engine_id = self.cfg.engine_id.clone();
        let Taken {
            request: close,
            signer,
        } = match self.take_session::<pb::SessionClose>(
            incoming,
            trace,
            SESSION_CLOSE_REQUEST,
            |r| &r.session_id,
        ) {
            Take::Passed(t) => t,
            Take::Refused(ack) => return self.answer_session(incoming, ack).await,
            Take::Undecodable(error) => {
                incoming.fail(error).await;
                return Ok(());
            }
        };
        let id = close.session_id.clone();
        for _ in 0..CLOSE_ATTEMPTS {
            let Some((current, revision)) = self.known_session(&id).await else {
                let error = field_error(
                    "session_id",
                    RULE_OPEN_SESSION,
                    format!("no session {}", echo(&id)),
                );
                return self
                    .answer_session(incoming, invalid(&id, vec![error], &engine_id))
                    .await;
            };
            if !owned_by(&current, &signer) {
                return self
                    .answer_session(incoming, not_owner(&id, &engine_id))
                    .await;
            }
            let was = State::of(&current);
            let cancel = close.cancel_orders || current.cancel_orders;
            if was != State::Open && cancel == current.cancel_orders {
                // Ended already, nothing more to do: closing is idempotent.
                let ack = self.session_closed(&id, 0, &format!("already {}", was.label()));
                return self.answer_session(incoming, ack).await;
            }
            let mut record = current;
            record.closed = true;
            record.cancel_orders = cancel;
            record.engine_id.clone_from(&engine_id);
            if was == State::Open {
                record.ended_at_unix_ns = now_ns();
            }
            match self.sessions.store.update(&record, revision).await {
                Ok(Written::At(stored)) => {
                    let applied = self.sessions.known.apply(record, stored, Instant::now());
                    let canceled = self.session_effects(&id, applied).await?;
                    info!(cancel_orders = cancel, canceled, "session closed");
                    let ack = self.session_closed(&id, canceled, "closed");
                    return self.answer_session(incoming, ack).await;
                }
                // Moved on (a renewal, a loss, another close): read it again and merge.
                Ok(Written::Conflict) => self.refresh_session(&id).await?,
                Err(why) => {
                    warn!(error = %why, "session not closed: the session store refused the record");
                    return self
                        .answer_session(incoming, store_down(&id, &why, &engine_id))
                        .await;
                }
            }
        }
        let why = "the record kept changing while closing it; close it again";
        self.answer_session(incoming, store_down(&id, why, &engine_id))
            .await
    }

    /// The ACCEPTED answer of a close.
    fn session_closed(&self, id: &str, canceled: usize, text: &str) -> pb::SessionAck {
        pb::SessionAck {
            session_id: id.into(),
            status: AckStatus::Accepted as i32,
            engine_id: self.cfg.engine_id.clone(),
            canceled: u32::try_from(canceled).unwrap_or(u32::MAX),
            text: text.into(),
            ..Default::default()
        }
    }

    /// Answers a session request; a rejected one is counted by its reason.
    async fn answer_session(
        &self,
        incoming: &Incoming,
        ack: pb::SessionAck,
    ) -> Result<(), EngineError> {
        if ack.status != AckStatus::Accepted as i32 {
            self.metrics.reject(ack.reason);
            debug!(reason = ack.reason, text = %ack.text, "session request rejected");
        }
        incoming.answer(ack.encode_to_vec()).await;
        Ok(())
    }

    /// The checks every session request goes through: counted, authorized (a refusal is
    /// logged, alerted and answered), decoded, its session id valid and the subject's.
    fn take_session<M: prost::Message + Default>(
        &mut self,
        incoming: &Incoming,
        trace: &Trace,
        schema: &str,
        id_of: impl Fn(&M) -> &String,
    ) -> Take<M> {
        let engine_id = self.cfg.engine_id.clone();
        let msg = incoming.msg();
        let subject = msg.subject.as_str();
        self.count_request(
            msg.reply.as_ref(),
            msg.headers.as_ref(),
            msg.payload.len(),
            schema,
        );
        let claimed = subject_id(subject);
        let verified =
            match self.authorize(subject, &msg.payload, msg.headers.as_ref(), now_ns(), None) {
                Ok(v) => v,
                Err(refusal) => {
                    self.refused(&refusal, subject, &trace.correlation_id, "");
                    let reason = refusal.kind.reject_reason();
                    return Take::Refused(refused(
                        claimed,
                        reason,
                        vec![],
                        refusal.text,
                        &engine_id,
                    ));
                }
            };
        let request = match M::decode(msg.payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                self.counters.malformed += 1;
                self.metrics.reject(RejectReason::Malformed as i32);
                return Take::Undecodable(ServiceError::undecodable(schema, &e));
            }
        };
        let id = id_of(&request);
        let error = if !valid_session_id(id) {
            Some(field_error(
                "session_id",
                "pattern",
                format!("{} must be 1-64 characters of [A-Za-z0-9_-]", echo(id)),
            ))
        } else if id != claimed {
            Some(field_error(
                "session_id",
                "subject",
                format!(
                    "{} is not the subject's session {}",
                    echo(id),
                    echo(claimed)
                ),
            ))
        } else {
            None
        };
        if let Some(error) = error {
            return Take::Refused(invalid(id, vec![error], &engine_id));
        }
        let signer = verified.map(|v| v.nkey).unwrap_or_default();
        Take::Passed(Taken { request, signer })
    }
}
