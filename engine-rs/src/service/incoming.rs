//! One request of a service endpoint and its single answer, through async-nats'
//! [`Request::respond`](async_nats::service::Request::respond) so that the service's statistics
//! (`nats micro stats`: requests, errors, processing time per endpoint) count it.
//!
//! What is an endpoint error: a request the engine cannot serve at all — undecodable
//! (code 400) or an internal failure that stops the engine (code 500). A business answer, even
//! a rejection (risk, refusal, unknown order), is a successful request. An error answer is the
//! service API's own: no payload, headers `Nats-Service-Error` (the status text) and
//! `Nats-Service-Error-Code`.
//!
//! Each request is answered at most once: the server grants the engine one response per
//! request (`allow_responses`), so a second publish would be a permissions violation.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::service::{self, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use tracing::warn;

use crate::validate::truncate;

/// Code of a request that is not the message its endpoint takes.
pub const BAD_REQUEST: usize = 400;
/// Code of a request the engine failed while serving it: its outcome is unknown.
pub const INTERNAL: usize = 500;

/// The longest status text an error answer carries (a header value).
const MAX_STATUS_BYTES: usize = 256;

/// An endpoint error: the service API's code and status text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub code: usize,
    pub status: String,
}

impl ServiceError {
    /// A request whose payload does not decode as `what` (e.g. `bridge.v1.NewOrder`).
    pub fn undecodable(what: &str, error: &prost::DecodeError) -> ServiceError {
        ServiceError::new(BAD_REQUEST, &format!("not a {what}: {error}"))
    }

    /// The engine failed while serving the request and stops: whether the operation took
    /// effect is unknown (the caller queries the order's status). No detail of the failure is
    /// sent; the engine's log has it.
    pub fn internal() -> ServiceError {
        ServiceError::new(
            INTERNAL,
            "engine failure while serving this request: outcome unknown, query the order status",
        )
    }

    /// `status` made a header value: one line, cut to [`MAX_STATUS_BYTES`].
    pub fn new(code: usize, status: &str) -> ServiceError {
        let line: String = status
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        ServiceError {
            code,
            status: truncate(&line, MAX_STATUS_BYTES).to_string(),
        }
    }

    /// The error an answer's headers carry, if it is a service API error answer (e.g. a peer
    /// engine's answer to a relayed cancel).
    pub fn of_answer(headers: Option<&HeaderMap>) -> Option<ServiceError> {
        let headers = headers?;
        let status = headers.get(NATS_SERVICE_ERROR)?.as_str();
        let code = headers
            .get(NATS_SERVICE_ERROR_CODE)
            .and_then(|c| c.as_str().parse().ok())
            .unwrap_or(INTERNAL);
        Some(ServiceError::new(code, status))
    }
}

/// A request taken from one of the engine's service endpoints.
pub struct Incoming {
    request: service::Request,
    answered: AtomicBool,
}

impl Incoming {
    pub fn new(request: service::Request) -> Incoming {
        Incoming {
            request,
            answered: AtomicBool::new(false),
        }
    }

    /// The request message (subject, headers, payload, reply subject).
    pub fn msg(&self) -> &Message {
        &self.request.message
    }

    /// Whether the request has had its answer (or needs none: no reply subject).
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// Answers with `payload` (a successful request). A request without a reply subject is
    /// not answered (and not counted); a failure to send is only logged.
    pub async fn answer(&self, payload: Vec<u8>) {
        self.send(Ok(Bytes::from(payload))).await;
    }

    /// Answers with an endpoint error (counted in the endpoint's errors).
    pub async fn fail(&self, error: ServiceError) {
        let error = service::error::Error {
            code: error.code,
            status: error.status,
        };
        self.send(Err(error)).await;
    }

    async fn send(&self, answer: Result<Bytes, service::error::Error>) {
        if self.answered.swap(true, Ordering::Relaxed) {
            warn!("a request was answered twice: the second answer is dropped");
            return;
        }
        if self.request.message.reply.is_none() {
            return;
        }
        if let Err(e) = self.request.respond(answer).await {
            warn!(error = %e, "could not send reply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status texts are header values: control characters become spaces, the length is bounded.
    #[test]
    fn status_text_is_one_bounded_line() {
        let e = ServiceError::new(BAD_REQUEST, "a\r\nb\tc");
        assert_eq!(e.status, "a  b c");
        let long = ServiceError::new(INTERNAL, &"x".repeat(10_000));
        assert_eq!(long.status.len(), MAX_STATUS_BYTES);
        assert_eq!(long.code, INTERNAL);
    }

    /// An undecodable payload is a bad request naming the expected message.
    #[test]
    fn undecodable_is_a_bad_request() {
        use prost::Message as _;
        let err = crate::proto::v1::NewOrder::decode(&b"\xff\xff\xff"[..]).unwrap_err();
        let e = ServiceError::undecodable("bridge.v1.NewOrder", &err);
        assert_eq!(e.code, BAD_REQUEST);
        assert!(
            e.status.starts_with("not a bridge.v1.NewOrder: "),
            "{}",
            e.status
        );
    }

    /// An answer with the service API's error headers is read back as that error; any other
    /// answer (no headers, other headers) is none.
    #[test]
    fn error_answers_are_recognised() {
        let mut h = HeaderMap::new();
        assert_eq!(ServiceError::of_answer(None), None);
        assert_eq!(ServiceError::of_answer(Some(&h)), None);
        h.insert(NATS_SERVICE_ERROR, "boom");
        assert_eq!(
            ServiceError::of_answer(Some(&h)),
            Some(ServiceError::new(INTERNAL, "boom"))
        );
        h.insert(NATS_SERVICE_ERROR_CODE, "400");
        assert_eq!(
            ServiceError::of_answer(Some(&h)).map(|e| e.code),
            Some(BAD_REQUEST)
        );
    }

    /// The internal error says the outcome is unknown and carries no failure detail.
    #[test]
    fn internal_error_is_generic() {
        let e = ServiceError::internal();
        assert_eq!(e.code, INTERNAL);
        assert!(e.status.contains("outcome unknown"));
    }
}
