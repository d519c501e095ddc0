//! The requests the engine serves, one module each (parse + apply): [`submit`], [`queued`]
//! (a pull of the ORDERS consumer), [`cancel`] and [`status`]; and the one dispatch of a
//! request-reply message to its command. Every order operation's contract version
//! (`Bridge-Schema-Version`) is checked first, in one place: [`version`].
//!
//! Each command binds the request's ids ([`Trace`]: correlation id, trace id) and, once known,
//! the order's (`client_order_id`, `account`) to a tracing span, so every line logged while it
//! is handled carries them, under the field names of the client's lines.

use async_nats::service::endpoint::Endpoint;
use futures::{FutureExt, StreamExt};
use tracing::Instrument;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::proto::v1::RejectReason;
use crate::service::{Incoming, ServiceError};
use crate::trace::Trace;
use crate::validate::{
    field_error, truncate, Rejection, MAX_ACCOUNT_BYTES, MAX_CLIENT_ORDER_ID_BYTES,
};

pub mod authorize;
pub mod cancel;
pub mod expiry;
pub mod market;
pub mod mass_cancel;
pub mod queued;
pub mod queued_batch;
pub mod relay;
pub mod replace;
pub mod session;
pub mod status;
pub mod submit;
pub mod version;

/// A request of one of the engine's service endpoints ([`crate::service`]), by endpoint.
pub enum Request {
    Submit(Incoming),
    /// An order relayed by the engine that received it (`bridge.v1.engine.<engine_id>.submit`,
    /// partitioned engines): its signer was checked by that engine.
    ForwardedSubmit(Incoming),
    Cancel(Incoming),
    /// A cancel relayed by another engine (`bridge.v1.engine.<engine_id>.cancel`).
    ForwardedCancel(Incoming),
    Status(Incoming),
    /// A market data snapshot request (`bridge.v1.md.snapshot.<symbol>`).
    MdSnapshot(Incoming),
    /// An input stream's opening (`bridge.v1.feed.open`).
    FeedOpen(Incoming),
    /// One input stream message (`bridge.v1.feed.data.<stream_id>`; not a request).
    FeedData(async_nats::Message),
    /// Amend a resting order (`bridge.v1.orders.replace.<account>`).
    Replace(Incoming),
    /// Cancel an account's open orders (`bridge.v1.orders.mass_cancel.<account>`).
    MassCancel(Incoming),
    /// A mass cancel relayed by the engine that received it
    /// (`bridge.v1.engine.<engine_id>.mass_cancel`): cancel in this engine's books only.
    ForwardedMassCancel(Incoming),
    /// Open or renew an orchestrator session (`bridge.v1.session.open.<session_id>`).
    SessionOpen(Incoming),
    /// Close a session (`bridge.v1.session.close.<session_id>`).
    SessionClose(Incoming),
    /// A session heartbeat (`bridge.v1.session.heartbeat.<session_id>`; not a request).
    SessionHeartbeat(async_nats::Message),
    /// SIGHUP: re-read the entitlements file.
    ReloadEntitlements,
}

impl Engine {
    /// The one dispatch: applies a request. Status queries already received are answered
    /// before an order is taken (see [`Engine::answer_statuses`]). A failure that stops the
    /// engine answers its request first with an internal endpoint error (outcome unknown),
    /// unless it was answered already.
    pub async fn dispatch(
        &mut self,
        request: Request,
        statuses: &mut Endpoint,
    ) -> Result<(), EngineError> {
        // Admitted one by one there, taken together.
        let request = match request {
            Request::Submit(r) | Request::ForwardedSubmit(r) => {
                return self.dispatch_submits(vec![r], statuses).await
            }
            other => other,
        };
        if let Some((op, r)) = request.versioned() {
            if !self.admit(op, r).await {
                return Ok(());
            }
        }
        let (req, served) = match request {
            Request::Submit(r) | Request::ForwardedSubmit(r) => {
                let served = self.on_submits(std::slice::from_ref(&r)).await;
                (r, served)
            }
            Request::Cancel(r) => {
                let served = self.on_cancel(&r, false).await;
                (r, served)
            }
            Request::ForwardedCancel(r) => {
                let served = self.on_cancel(&r, true).await;
                (r, served)
            }
            Request::Status(r) => {
                let served = self.on_status(&r).await;
                (r, served)
            }
            Request::MdSnapshot(r) => {
                let served = self.on_md_snapshot(&r).await;
                (r, served)
            }
            Request::FeedOpen(r) => {
                let served = self.on_feed_open(&r).await;
                (r, served)
            }
            Request::FeedData(m) => return self.on_feed_data(m).await,
            Request::Replace(r) => {
                self.answer_statuses(statuses).await?;
                let served = self.on_replace(&r).await;
                (r, served)
            }
            Request::MassCancel(r) => {
                let served = self.on_mass_cancel(&r, false).await;
                (r, served)
            }
            Request::ForwardedMassCancel(r) => {
                let served = self.on_mass_cancel(&r, true).await;
                (r, served)
            }
            Request::SessionOpen(r) => {
                let served = self.on_session_open(&r).await;
                (r, served)
            }
            Request::SessionClose(r) => {
                let served = self.on_session_close(&r).await;
                (r, served)
            }
            Request::SessionHeartbeat(m) => {
                self.on_session_heartbeat(&m);
                return Ok(());
            }
            Request::ReloadEntitlements => {
                self.reload_entitlements();
                return Ok(());
            }
        };
        failed(&req, served).await
    }

    /// Synchronous submits already received, as one commit group ([`Engine::on_submits`]):
    /// each admitted by its contract version first. A failure that stops the engine answers
    /// every request of the group not answered yet with an internal endpoint error.
    pub async fn dispatch_submits(
        &mut self,
        reqs: Vec<Incoming>,
        statuses: &mut Endpoint,
    ) -> Result<(), EngineError> {
        let reqs = self.relay_foreign_submits(reqs).await?;
        let mut admitted = Vec::with_capacity(reqs.len());
        for r in reqs {
            if self.admit(version::Operation::Submit, &r).await {
                admitted.push(r);
            }
        }
        if admitted.is_empty() {
            return Ok(());
        }
        self.answer_statuses(statuses).await?;
        let served = self.on_submits(&admitted).await;
        if served.is_err() {
            for r in &admitted {
                if !r.answered() {
                    r.fail(ServiceError::internal()).await;
                }
            }
        }
        served
    }

    /// Answers every status query already received, before the next order is taken: a query
    /// is answered promptly, not behind a backlog of orders (possibly the very backlog that
    /// made its caller time out); "not found" is safe to answer at any time (see
    /// [`Engine::retire`]).
    pub async fn answer_statuses(&mut self, statuses: &mut Endpoint) -> Result<(), EngineError> {
        while let Some(Some(r)) = statuses.next().now_or_never() {
            let r = Incoming::new(r);
            if !self.admit(version::Operation::Status, &r).await {
                continue;
            }
            let served = self.on_status(&r).await;
            failed(&r, served).await?;
        }
        Ok(())
    }
}

/// Passes `served` on; if it is a failure (the engine stops), first answers the request with
/// an internal endpoint error, unless it has its answer already.
async fn failed(req: &Incoming, served: Result<(), EngineError>) -> Result<(), EngineError> {
    if served.is_err() && !req.answered() {
        req.fail(ServiceError::internal()).await;
    }
    served
}

/// A message that is not the protobuf it should be (a queued order: reported REJECTED).
pub(crate) fn malformed(e: &prost::DecodeError) -> Rejection {
    Rejection {
        reason: RejectReason::Malformed,
        errors: vec![field_error(
            "<message>",
            "decodable",
            format!("not a bridge.v1.NewOrder: {e}"),
        )],
    }
}

/// The span of one request: its ids and its sender's contract version, and the order's ids
/// once known.
pub(crate) fn request_span(trace: &Trace) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        correlation_id = trace.correlation_id.as_str(),
        trace_id = trace.trace_id.as_str(),
        client_order_id = tracing::field::Empty,
        account = tracing::field::Empty,
        schema_version = tracing::field::Empty
    );
    record_version(&span, trace);
    span
}

/// The span of one order's request, its ids (cut to their limits) known from the start.
pub(crate) fn order_span(trace: &Trace, account: &str, client_order_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        correlation_id = trace.correlation_id.as_str(),
        trace_id = trace.trace_id.as_str(),
        client_order_id = truncate(client_order_id, MAX_CLIENT_ORDER_ID_BYTES),
        account = truncate(account, MAX_ACCOUNT_BYTES),
        schema_version = tracing::field::Empty
    );
    record_version(&span, trace);
    span
}

/// Records the sender's contract version on a request span (not for a recovered order).
fn record_version(span: &tracing::Span, trace: &Trace) {
    if !trace.schema_version.is_empty() {
        span.record("schema_version", trace.schema_version.as_str());
    }
}

/// Records the order's ids (cut to their limits) on a request span.
pub(crate) fn record_order(span: &tracing::Span, account: &str, client_order_id: &str) {
    span.record(
        "client_order_id",
        truncate(client_order_id, MAX_CLIENT_ORDER_ID_BYTES),
    );
    span.record("account", truncate(account, MAX_ACCOUNT_BYTES));
}

/// Runs `f` inside `span`.
pub(crate) async fn within<F: std::future::Future>(span: tracing::Span, f: F) -> F::Output {
    f.instrument(span).await
}
