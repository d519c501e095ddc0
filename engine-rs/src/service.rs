//! The engine as NATS micro service [`contract::SERVICE_NAME`] (async-nats' service API), one
//! instance per engine process: `nats micro ls | info | stats | ping` list every running engine
//! (instance id, version = the crate's, metadata `engine_id` and `contract_version`) with
//! per-endpoint request counts, errors and processing time. Its endpoints are the engine's request-reply intake:
//!
//! | endpoint | subject | queue group |
//! |---|---|---|
//! | `submit` | [`contract::SUBMIT_ALL`] | [`contract::ENGINE_QUEUE_GROUP`] |
//! | `cancel` | [`contract::CANCEL_ALL`] | same |
//! | `status` | [`contract::STATUS_ALL`] | same |
//! | `forwarded-cancel` | [`contract::engine_cancel`] of this engine | same (this engine only) |
//! | `forwarded-submit` | [`contract::engine_submit`] of this engine | same (this engine only) |
//! | `forwarded-replace` | [`contract::engine_replace`] of this engine | same (this engine only) |
//! | `forwarded-status` | [`contract::engine_status`] of this engine | same (this engine only) |
//! | `md-snapshot` | [`contract::MD_SNAPSHOT_ALL`] | same |
//! | `feed-open` | [`contract::FEED_OPEN`] | same |
//! | `replace` | [`contract::REPLACE_ALL`] | same |
//! | `mass-cancel` | [`contract::MASS_CANCEL_ALL`] | same |
//! | `forwarded-mass-cancel` | [`contract::engine_mass_cancel`] of this engine | same (this engine only) |
//! | `session-open` | [`contract::SESSION_OPEN_ALL`] | same |
//! | `session-close` | [`contract::SESSION_CLOSE_ALL`] | same |
//!
//! Input stream messages ([`contract::feed_data`]) are not requests (their reply subject is
//! the sender's grant inbox, answered every half window): a plain subscription in the same
//! queue group. Session heartbeats ([`contract::SESSION_HEARTBEAT_ALL`]) are not requests either,
//! and every engine needs each one (each cancels its own orders of a lost session): a plain
//! subscription outside the queue group.
//!
//! Every request is answered through [`Incoming`] (the service's `Request::respond`), so the
//! statistics are the real ones. With SIGHUP (reload the entitlements), the endpoints are the
//! one source of [`Request`]s of the run loop.
//!
//! Stopping intake: the endpoints unsubscribe and the server confirms (flush); requests already
//! received are still served, then each endpoint's stream ends. async-nats 0.51 has no drain of
//! a service endpoint (its unsubscribe forgets the subscription at once), so a request the
//! server routed here in the instant before it processed the unsubscribe is dropped: its caller
//! times out (outcome unknown, resolved by a status query, as for any lost reply). The service
//! itself (PING/INFO/STATS) is stopped last, once nothing is left to serve.

use std::collections::HashMap;

use async_nats::service::endpoint::Endpoint;
use async_nats::service::{Service, ServiceExt};
use async_nats::Client;
use futures::{FutureExt, StreamExt};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::commands::authorize::{
    CANCEL_REQUEST, MASS_CANCEL_REQUEST, NEW_ORDER, ORDER_STATUS_REQUEST, REPLACE_REQUEST,
    SESSION_CLOSE_REQUEST, SESSION_OPEN_REQUEST,
};
use crate::commands::Request;
use crate::config::Config;
use crate::contract;
use crate::error::SetupError;

pub mod incoming;

pub use incoming::{Incoming, ServiceError};

/// Endpoint names, as `nats micro info | stats` show them.
pub const SUBMIT: &str = "submit";
pub const CANCEL: &str = "cancel";
pub const STATUS: &str = "status";
pub const FORWARDED_CANCEL: &str = "forwarded-cancel";
pub const FORWARDED_SUBMIT: &str = "forwarded-submit";
pub const FORWARDED_REPLACE: &str = "forwarded-replace";
pub const FORWARDED_STATUS: &str = "forwarded-status";
pub const MD_SNAPSHOT: &str = "md-snapshot";
pub const FEED_OPEN: &str = "feed-open";
pub const REPLACE: &str = "replace";
pub const MASS_CANCEL: &str = "mass-cancel";
pub const FORWARDED_MASS_CANCEL: &str = "forwarded-mass-cancel";
pub const SESSION_OPEN: &str = "session-open";
pub const SESSION_CLOSE: &str = "session-close";

/// How many sources [`Intake::next`] selects over (endpoints and subscriptions).
const SOURCES: usize = 16;

/// Key of the contract version (`major.minor`) in the service metadata (absent on a 1.0
/// engine).
pub const CONTRACT_VERSION_KEY: &str = "contract_version";

/// The service version: the engine crate's (a SemVer, as the service API requires).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const DESCRIPTION: &str = "bridge.v1 execution engine: synchronous submit, cancel and status of \
     orders (queued orders come through JetStream)";

/// The running service and its endpoints, with SIGHUP, as one source of [`Request`]s.
pub struct Intake {
    service: Service,
    submits: Endpoint,
    cancels: Endpoint,
    forwarded: Endpoint,
    /// Status queries: also drained ahead of each order ([`crate::engine::Engine::answer_statuses`]).
    pub statuses: Endpoint,
    snapshots: Endpoint,
    feed_opens: Endpoint,
    feed_data: async_nats::Subscriber,
    replaces: Endpoint,
    mass_cancels: Endpoint,
    forwarded_mass_cancels: Endpoint,
    session_opens: Endpoint,
    session_closes: Endpoint,
    heartbeats: async_nats::Subscriber,
    /// Orders relayed by the engine that received them (partitioned engines: this one owns
    /// their symbols' partition).
    forwarded_submits: Endpoint,
    /// Replaces and status queries of this partition's orders, relayed likewise.
    forwarded_replaces: Endpoint,
    forwarded_statuses: Endpoint,
    hangup: Signal,
    /// Which sources (in [`Intake::next`]'s order) have not ended.
    open: [bool; SOURCES],
}

impl Intake {
    /// Registers the service and subscribes its endpoints (the caller flushes, so that they are
    /// registered server-side before "engine ready").
    pub async fn start(client: &Client, cfg: &Config) -> Result<Intake, SetupError> {
        let setup = |e: async_nats::Error| SetupError::new("service", e);
        let hangup = signal(SignalKind::hangup()).map_err(|e| SetupError::new("SIGHUP", e))?;
        let service = client
            .service_builder()
            .description(DESCRIPTION)
            .metadata(HashMap::from([
                ("engine_id".to_string(), cfg.engine_id.clone()),
                // The contract this engine speaks: a client that finds no responder for a
                // request of a later contract tells "unsupported" from "unavailable" by it.
                (
                    CONTRACT_VERSION_KEY.to_string(),
                    contract::CONTRACT_VERSION.to_string(),
                ),
            ]))
            .queue_group(contract::ENGINE_QUEUE_GROUP)
            .start(contract::SERVICE_NAME, VERSION)
            .await
            .map_err(setup)?;
        let endpoint = |name: &str, subject: String, request: &str, response: &str| {
            service
                .endpoint_builder()
                .name(name)
                .metadata(HashMap::from([
                    ("request".to_string(), request.to_string()),
                    ("response".to_string(), response.to_string()),
                ]))
                .add(subject)
        };
        let (ack, status_reply) = ("bridge.v1.OrderAck", "bridge.v1.OrderStatusReply");
        let submits = endpoint(SUBMIT, contract::SUBMIT_ALL.into(), NEW_ORDER, ack)
            .await
            .map_err(setup)?;
        let cancels = endpoint(CANCEL, contract::CANCEL_ALL.into(), CANCEL_REQUEST, ack)
            .await
            .map_err(setup)?;
        let statuses = endpoint(
            STATUS,
            contract::STATUS_ALL.into(),
            ORDER_STATUS_REQUEST,
            status_reply,
        )
        .await
        .map_err(setup)?;
        let forwarded = endpoint(
            FORWARDED_CANCEL,
            contract::engine_cancel(&cfg.engine_id),
            CANCEL_REQUEST,
            ack,
        )
        .await
        .map_err(setup)?;
        let snapshots = endpoint(
            MD_SNAPSHOT,
            contract::MD_SNAPSHOT_ALL.into(),
            "bridge.v1.MarketDataSnapshotRequest",
            "bridge.v1.MarketDataSnapshot",
        )
        .await
        .map_err(setup)?;
        let feed_opens = endpoint(
            FEED_OPEN,
            contract::FEED_OPEN.into(),
            "bridge.v1.FeedOpen",
            "bridge.v1.FeedGrant",
        )
        .await
        .map_err(setup)?;
        let feed_data = client
            .queue_subscribe(
                contract::feed_data("*"),
                contract::ENGINE_QUEUE_GROUP.into(),
            )
            .await
            .map_err(|e| SetupError::new("feed subscription", e))?;
        let replaces = endpoint(REPLACE, contract::REPLACE_ALL.into(), REPLACE_REQUEST, ack)
            .await
            .map_err(setup)?;
        let mass_reply = "bridge.v1.MassCancelReply";
        let mass_cancels = endpoint(
            MASS_CANCEL,
            contract::MASS_CANCEL_ALL.into(),
            MASS_CANCEL_REQUEST,
            mass_reply,
        )
        .await
        .map_err(setup)?;
        let forwarded_mass_cancels = endpoint(
            FORWARDED_MASS_CANCEL,
            contract::engine_mass_cancel(&cfg.engine_id),
            MASS_CANCEL_REQUEST,
            mass_reply,
        )
        .await
        .map_err(setup)?;
        let session_ack = "bridge.v1.SessionAck";
        let session_opens = endpoint(
            SESSION_OPEN,
            contract::SESSION_OPEN_ALL.into(),
            SESSION_OPEN_REQUEST,
            session_ack,
        )
        .await
        .map_err(setup)?;
        let session_closes = endpoint(
            SESSION_CLOSE,
            contract::SESSION_CLOSE_ALL.into(),
            SESSION_CLOSE_REQUEST,
            session_ack,
        )
        .await
        .map_err(setup)?;
        let forwarded_submits = endpoint(
            FORWARDED_SUBMIT,
            contract::engine_submit(&cfg.engine_id),
            NEW_ORDER,
            ack,
        )
        .await
        .map_err(setup)?;
        let forwarded_replaces = endpoint(
            FORWARDED_REPLACE,
            contract::engine_replace(&cfg.engine_id),
            REPLACE_REQUEST,
            ack,
        )
        .await
        .map_err(setup)?;
        let forwarded_statuses = endpoint(
            FORWARDED_STATUS,
            contract::engine_status(&cfg.engine_id),
            ORDER_STATUS_REQUEST,
            status_reply,
        )
        .await
        .map_err(setup)?;
        let heartbeats = client
            .subscribe(contract::SESSION_HEARTBEAT_ALL)
            .await
            .map_err(|e| SetupError::new("session heartbeat subscription", e))?;
        Ok(Intake {
            service,
            submits,
            cancels,
            forwarded,
            statuses,
            snapshots,
            feed_opens,
            feed_data,
            replaces,
            mass_cancels,
            forwarded_mass_cancels,
            session_opens,
            session_closes,
            heartbeats,
            forwarded_submits,
            forwarded_replaces,
            forwarded_statuses,
            hangup,
            open: [true; SOURCES],
        })
    }

    /// The next request of any endpoint (or SIGHUP); `None` once every endpoint has ended.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Request> {
        while self.open.iter().any(|o| *o) {
            let open = self.open;
            let incoming = |r: async_nats::service::Request| Incoming::new(r);
            tokio::select! {
                r = self.submits.next(), if open[0] => match r { Some(r) => return Some(Request::Submit(incoming(r))), None => self.open[0] = false },
                r = self.cancels.next(), if open[1] => match r { Some(r) => return Some(Request::Cancel(incoming(r))), None => self.open[1] = false },
                r = self.forwarded.next(), if open[2] => match r { Some(r) => return Some(Request::ForwardedCancel(incoming(r))), None => self.open[2] = false },
                r = self.statuses.next(), if open[3] => match r { Some(r) => return Some(Request::Status(incoming(r))), None => self.open[3] = false },
                r = self.snapshots.next(), if open[4] => match r { Some(r) => return Some(Request::MdSnapshot(incoming(r))), None => self.open[4] = false },
                r = self.feed_opens.next(), if open[5] => match r { Some(r) => return Some(Request::FeedOpen(incoming(r))), None => self.open[5] = false },
                m = self.feed_data.next(), if open[6] => match m { Some(m) => return Some(Request::FeedData(m)), None => self.open[6] = false },
                r = self.replaces.next(), if open[7] => match r { Some(r) => return Some(Request::Replace(incoming(r))), None => self.open[7] = false },
                r = self.mass_cancels.next(), if open[8] => match r { Some(r) => return Some(Request::MassCancel(incoming(r))), None => self.open[8] = false },
                r = self.forwarded_mass_cancels.next(), if open[9] => match r { Some(r) => return Some(Request::ForwardedMassCancel(incoming(r))), None => self.open[9] = false },
                r = self.session_opens.next(), if open[10] => match r { Some(r) => return Some(Request::SessionOpen(incoming(r))), None => self.open[10] = false },
                r = self.session_closes.next(), if open[11] => match r { Some(r) => return Some(Request::SessionClose(incoming(r))), None => self.open[11] = false },
                m = self.heartbeats.next(), if open[12] => match m { Some(m) => return Some(Request::SessionHeartbeat(m)), None => self.open[12] = false },
                r = self.forwarded_submits.next(), if open[13] => match r { Some(r) => return Some(Request::ForwardedSubmit(incoming(r))), None => self.open[13] = false },
                r = self.forwarded_replaces.next(), if open[14] => match r { Some(r) => return Some(Request::Replace(incoming(r))), None => self.open[14] = false },
                r = self.forwarded_statuses.next(), if open[15] => match r { Some(r) => return Some(Request::Status(incoming(r))), None => self.open[15] = false },
                Some(()) = self.hangup.recv() => return Some(Request::ReloadEntitlements),
            }
        }
        None
    }

    /// Moves submits already received (none is waited for) into `group`, until it holds `max`:
    /// the synchronous orders the engine takes together (`Engine::on_submits`).
    pub fn ready_submits(&mut self, group: &mut Vec<Incoming>, max: usize) {
        while group.len() < max {
            match self.submits.next().now_or_never() {
                Some(Some(r)) => group.push(Incoming::new(r)),
                _ => break,
            }
        }
    }

    /// Stops intake: every endpoint unsubscribes and the server confirms it (see the module
    /// doc); requests already received still come out of [`Intake::next`], which ends once
    /// they are served.
    pub async fn stop_intake(&mut self, client: &Client) {
        for e in [
            &mut self.submits,
            &mut self.cancels,
            &mut self.statuses,
            &mut self.forwarded,
            &mut self.snapshots,
            &mut self.feed_opens,
            &mut self.replaces,
            &mut self.mass_cancels,
            &mut self.forwarded_mass_cancels,
            &mut self.session_opens,
            &mut self.session_closes,
            &mut self.forwarded_submits,
            &mut self.forwarded_replaces,
            &mut self.forwarded_statuses,
        ] {
            let _ = e.stop().await;
        }
        let _ = self.feed_data.unsubscribe().await;
        let _ = self.heartbeats.unsubscribe().await;
        let _ = client.flush().await;
    }

    /// Removes this instance from the service (no more PING/INFO/STATS answers).
    pub async fn close(self) {
        let _ = self.service.stop().await;
    }
}
