//! The engine as NATS micro service [`contract::SERVICE_NAME`] (async-nats' service API), one
//! instance per engine process: `nats micro ls | info | stats | ping` list every running engine
//! (instance id, version = the crate's, metadata `engine_id`) with per-endpoint request counts,
//! errors and processing time. Its endpoints are the engine's request-reply intake:
//!
//! | endpoint | subject | queue group |
//! |---|---|---|
//! | `submit` | [`contract::SUBMIT_ALL`] | [`contract::ENGINE_QUEUE_GROUP`] |
//! | `cancel` | [`contract::CANCEL_ALL`] | same |
//! | `status` | [`contract::STATUS_ALL`] | same |
//! | `forwarded-cancel` | [`contract::engine_cancel`] of this engine | same (this engine only) |
//! | `md-snapshot` | [`contract::MD_SNAPSHOT_ALL`] | same |
//! | `feed-open` | [`contract::FEED_OPEN`] | same |
//!
//! Input stream messages ([`contract::feed_data`]) are not requests (their reply subject is
//! the sender's grant inbox, answered every half window): a plain subscription in the same
//! queue group.
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
use futures::StreamExt;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::commands::authorize::{CANCEL_REQUEST, NEW_ORDER, ORDER_STATUS_REQUEST};
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
pub const MD_SNAPSHOT: &str = "md-snapshot";
pub const FEED_OPEN: &str = "feed-open";

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
    hangup: Signal,
    /// Which sources (submits, cancels, forwarded, statuses, snapshots, feed opens, feed
    /// data) have not ended.
    open: [bool; 7],
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
            .metadata(HashMap::from([(
                "engine_id".to_string(),
                cfg.engine_id.clone(),
            )]))
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
        Ok(Intake {
            service,
            submits,
            cancels,
            forwarded,
            statuses,
            snapshots,
            feed_opens,
            feed_data,
            hangup,
            open: [true; 7],
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
                Some(()) = self.hangup.recv() => return Some(Request::ReloadEntitlements),
            }
        }
        None
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
        ] {
            let _ = e.stop().await;
        }
        let _ = self.feed_data.unsubscribe().await;
        let _ = client.flush().await;
    }

    /// Removes this instance from the service (no more PING/INFO/STATS answers).
    pub async fn close(self) {
        let _ = self.service.stop().await;
    }
}
