//! The authorization checks ([`crate::auth`]) on the order path, and what a refusal sets off:
//! an ERROR line (correlation id, subject, signer; never a secret), a `SecurityAlert` on the
//! ALERTS stream ([`crate::alerts`]) and a count ([`crate::intake::IntakeCounters`]). Also the
//! counts of requests nobody can be answered about, and the entitlements reload (SIGHUP).

use async_nats::HeaderMap;
use tracing::{error, info};

use crate::auth::{self, signature::Headers, Refusal, Verified};
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::proto::v1::{self as pb, SecurityAlert};
use crate::validate::{truncate, MAX_CLIENT_ORDER_ID_BYTES, MAX_NEW_ORDER_BYTES};

/// The full protobuf names `Bridge-Schema` carries, per request type.
pub(crate) const NEW_ORDER: &str = "bridge.v1.NewOrder";
pub(crate) const ORDER_BATCH: &str = "bridge.v1.OrderBatch";
pub(crate) const CANCEL_REQUEST: &str = "bridge.v1.CancelRequest";
pub(crate) const ORDER_STATUS_REQUEST: &str = "bridge.v1.OrderStatusRequest";
pub(crate) const REPLACE_REQUEST: &str = "bridge.v1.ReplaceRequest";
pub(crate) const MASS_CANCEL_REQUEST: &str = "bridge.v1.MassCancelRequest";
pub(crate) const SESSION_OPEN_REQUEST: &str = "bridge.v1.SessionOpen";
pub(crate) const SESSION_CLOSE_REQUEST: &str = "bridge.v1.SessionClose";

/// A cancel or status request is a few ids: anything larger than an order is oversize.
const MAX_REQUEST_BYTES: usize = MAX_NEW_ORDER_BYTES;

/// One header's first value.
fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

impl Engine {
    /// Checks 1-5 of [`crate::auth`] on a message. `Ok(None)`: signatures are not required
    /// (nothing is checked). `reference_ns` is what signed_at is compared with (now, or a
    /// queued order's stored time); `stream_seq` a queued order's stream sequence.
    pub(crate) fn authorize(
        &mut self,
        subject: &str,
        payload: &[u8],
        headers: Option<&HeaderMap>,
        reference_ns: i64,
        stream_seq: Option<u64>,
    ) -> Result<Option<Verified>, Refusal> {
        let Some(authorizer) = self.auth.as_mut() else {
            return Ok(None);
        };
        let msg = auth::Message {
            subject,
            payload,
            headers: Headers {
                signer: header(headers, contract::HEADER_SIGNER),
                signed_at: header(headers, contract::HEADER_SIGNED_AT),
                signature: header(headers, contract::HEADER_SIGNATURE),
            },
            reference_ns,
            stream_seq,
        };
        authorizer.check(&msg, now_ns()).map(Some)
    }

    /// A refusal's consequences besides its answer: counted, logged at ERROR, alerted.
    pub(crate) fn refused(
        &mut self,
        refusal: &Refusal,
        subject: &str,
        correlation_id: &str,
        client_order_id: &str,
    ) {
        self.counters.refused(refusal.kind);
        let kind = refusal.kind.token();
        let client_order_id = truncate(client_order_id, MAX_CLIENT_ORDER_ID_BYTES);
        error!(
            kind,
            reason = %refusal.text,
            subject = truncate(subject, 256),
            signer = %refusal.signer,
            identity = refusal.identity.as_deref().unwrap_or(""),
            correlation_id,
            client_order_id,
            "order operation refused"
        );
        let now = now_ns();
        self.alerts_raised += 1;
        let alert = SecurityAlert {
            alert_id: format!("{}-{now}-{}", self.cfg.engine_id, self.alerts_raised),
            kind: refusal.kind.violation() as i32,
            source: crate::alerts::SOURCE.into(),
            time_unix_ns: now,
            identity: refusal.identity.clone().unwrap_or_default(),
            nkey: refusal.signer.clone(),
            subject: truncate(subject, 256).into(),
            account: truncate(&refusal.account, 256).into(),
            reason: refusal.text.clone(),
            action: "refused".into(),
            engine_id: self.cfg.engine_id.clone(),
            client_order_id: client_order_id.into(),
            correlation_id: correlation_id.into(),
            ..Default::default()
        };
        self.alerts.raise(alert);
    }

    /// Counts what makes a request unattributable or unanswerable: no reply subject, a
    /// `Bridge-Schema` of another type than `schema`, a payload over the size limit.
    pub(crate) fn count_request(
        &mut self,
        reply: Option<&async_nats::Subject>,
        headers: Option<&HeaderMap>,
        payload_len: usize,
        schema: &str,
    ) {
        if reply.is_none() {
            self.counters.no_reply += 1;
        }
        self.count_message(headers, payload_len, schema);
    }

    /// [`Engine::count_request`] without the reply (a queued order has none).
    pub(crate) fn count_message(
        &mut self,
        headers: Option<&HeaderMap>,
        payload_len: usize,
        schema: &str,
    ) {
        if header(headers, contract::HEADER_SCHEMA).is_some_and(|s| s != schema) {
            self.counters.wrong_type += 1;
        }
        if payload_len > MAX_REQUEST_BYTES {
            self.counters.oversize += 1;
        }
    }

    /// Re-reads the entitlements file (SIGHUP): logs what changed, or keeps the entitlements
    /// in force when the new file is invalid (ERROR).
    pub fn reload_entitlements(&mut self) {
        let (Some(authorizer), Some(path)) =
            (self.auth.as_mut(), self.cfg.entitlements_file.as_ref())
        else {
            info!("SIGHUP: signatures are not required, no entitlements to reload");
            return;
        };
        match auth::entitlements::load(path) {
            Ok(new) => {
                let c = authorizer.replace(new);
                info!(
                    file = %path.display(),
                    identities_before = c.before,
                    identities = c.after,
                    added = ?c.added,
                    removed = ?c.removed,
                    changed = ?c.changed,
                    "entitlements reloaded"
                );
            }
            Err(e) => error!(
                file = %path.display(),
                error = %e,
                identities = authorizer.entitlements().identities().len(),
                "entitlements reload failed: keeping the entitlements in force"
            ),
        }
    }
}

/// The client order id a refused request's payload seems to carry (only echoed).
pub(crate) fn echoed_id<M: prost::Message + Default>(
    payload: &bytes::Bytes,
    id: impl Fn(&M) -> &str,
) -> String {
    M::decode(payload.clone())
        .map(|m| truncate(id(&m), MAX_CLIENT_ORDER_ID_BYTES).to_string())
        .unwrap_or_default()
}

/// The status reply of a refused status query: not found, with the refusal's reason and text.
pub(crate) fn refused_status(refusal: &Refusal) -> pb::OrderStatusReply {
    pb::OrderStatusReply {
        found: false,
        reason: refusal.kind.reject_reason() as i32,
        text: truncate(&refusal.text, crate::intake::MAX_REFUSAL_TEXT_BYTES).into(),
        ..Default::default()
    }
}
