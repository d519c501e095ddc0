//! Which JetStream / KV failures are worth a retry, and the engine's readiness while it
//! retries.
//!
//! Read from async-nats 0.51 (`jetstream/context.rs`, `jetstream/kv/mod.rs`, `lib.rs`):
//! * A message larger than the server's `max_payload` is refused by the client before it is
//!   sent: `PublishErrorKind::MaxPayloadExceeded`. `kv.create`/`kv.update` wrap it as
//!   `UpdateErrorKind::Other` / `CreateErrorKind::Other` with the `PublishError` as source.
//! * A JetStream API error in the publish ack (e.g. 10054 "message size exceeds maximum
//!   allowed", 10003 bad request) is `PublishErrorKind::Other` with a `jetstream::Error`
//!   source carrying the server's `err_code`.
//! * An invalid key is `*ErrorKind::InvalidKey`, found before anything is sent.
//! * A permissions violation is not answered to the request at all: the server sends
//!   `-ERR 'Permissions Violation for Publish to "<subject>"'`, which async-nats delivers only
//!   as `Event::ServerError(ServerError::Other(..))`, while the request itself times out
//!   (`TimedOut`). The connection's event callback therefore records denied subjects
//!   ([`note_server_error`]); a timed-out write whose subject was denied meanwhile is
//!   permanent.
//! * Timeouts, no responders (503, `StreamNotFound`), a broken pipe, `MaxAckPending` and
//!   everything else stay transient: they keep the retry policy of [`crate::retry`].

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, kv, ErrorCode};
use tracing::{info, warn};

/// JetStream API errors no retry can fix.
const PERMANENT_CODES: [ErrorCode; 4] = [
    ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM, // 10054: message size exceeds maximum allowed
    ErrorCode::BAD_REQUEST,                    // 10003
    ErrorCode::INVALID_JSON,                   // 10025
    ErrorCode::STREAM_STORE_FAILED,            // 10077: maximum messages / bytes exceeded
];

/// Why a failed operation will never succeed, or `None` when a retry may help.
pub fn permanent(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(p) = e.downcast_ref::<jetstream::context::PublishError>() {
            if p.kind() == PublishErrorKind::MaxPayloadExceeded {
                return Some(format!("payload too large: {error}"));
            }
        }
        if let Some(j) = e.downcast_ref::<jetstream::Error>() {
            if PERMANENT_CODES.contains(&j.error_code()) {
                return Some(format!("refused by JetStream: {error}"));
            }
        }
        let invalid_key = e
            .downcast_ref::<kv::CreateError>()
            .is_some_and(|c| c.kind() == kv::CreateErrorKind::InvalidKey)
            || e.downcast_ref::<kv::UpdateError>()
                .is_some_and(|c| c.kind() == kv::UpdateErrorKind::InvalidKey)
            || e.downcast_ref::<kv::EntryError>()
                .is_some_and(|c| c.kind() == kv::EntryErrorKind::InvalidKey);
        if invalid_key {
            return Some(format!("invalid key: {error}"));
        }
        if e.to_string()
            .to_ascii_lowercase()
            .contains("permissions violation")
        {
            return Some(format!("permission denied: {error}"));
        }
        cause = e.source();
    }
    None
}

/// [`permanent`], or a permissions violation the server reported for `subject` since `since`.
pub fn permanent_on(
    error: &(dyn StdError + 'static),
    subject: &str,
    since: Instant,
) -> Option<String> {
    permanent(error).or_else(|| {
        publish_denied_since(subject, since)
            .then(|| format!("permission denied: publish to {subject:?} ({error})"))
    })
}

/// Subjects the server refused us to publish to, most recent last (bounded).
static DENIED: Mutex<VecDeque<(Instant, String)>> = Mutex::new(VecDeque::new());
const DENIED_KEPT: usize = 64;

/// Records a server `-ERR` (from the connection's event callback): a publish permissions
/// violation names the subject that a pending write will then never get an answer for.
pub fn note_server_error(message: &str) {
    const PREFIX: &str = "permissions violation for publish to ";
    let lower = message.to_ascii_lowercase();
    let Some(at) = lower.find(PREFIX) else {
        return;
    };
    let subject = message[at + PREFIX.len()..].trim().trim_matches('"');
    if let Ok(mut denied) = DENIED.lock() {
        if denied.len() == DENIED_KEPT {
            denied.pop_front();
        }
        denied.push_back((Instant::now(), subject.to_string()));
    }
}

fn publish_denied_since(subject: &str, since: Instant) -> bool {
    DENIED.lock().is_ok_and(|denied| {
        denied
            .iter()
            .any(|(at, s)| *at >= since && s.as_str() == subject)
    })
}

/// Logs one retry of a JetStream operation outside the engine's requests (`what` on
/// `about`: a key, a consumer or an engine id).
pub fn retrying(what: &str, about: &str, error: &dyn std::fmt::Display, delay: Duration) {
    warn!(
        operation = what,
        about,
        error = %error,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "JetStream operation failed; retrying"
    );
}

/// Whether the engine is in the middle of retrying something. The engine serves requests one
/// at a time, so while it waits for a retried write nothing else is answered: it says so once
/// (`engine not ready: retrying <op>`, WARN) and again when the last retry ends
/// (`engine ready again`, INFO).
#[derive(Debug, Default)]
pub struct Readiness {
    retrying: AtomicUsize,
}

impl Readiness {
    /// A handle for one retried operation; its retries are reported through it.
    pub fn operation<'a>(&'a self, what: &'a str, about: &'a str) -> Attempts<'a> {
        Attempts {
            readiness: self,
            what,
            about,
            counted: AtomicBool::new(false),
        }
    }
}

/// One operation's retries (see [`Readiness`]); when dropped, the operation is over.
pub struct Attempts<'a> {
    readiness: &'a Readiness,
    what: &'a str,
    about: &'a str,
    counted: AtomicBool,
}

impl Attempts<'_> {
    /// Logs one retry (each one, WARN) and, on the first retry of the first operation that
    /// retries, that the engine is not ready.
    pub fn retrying(&self, error: &dyn std::fmt::Display, delay: Duration) {
        retrying(self.what, self.about, error, delay);
        if !self.counted.swap(true, Ordering::Relaxed)
            && self.readiness.retrying.fetch_add(1, Ordering::Relaxed) == 0
        {
            warn!(
                operation = self.what,
                about = self.about,
                "engine not ready: retrying {}; requests wait until it succeeds or \
                 jetstream_retry_deadline_ms passes",
                self.what
            );
        }
    }
}

impl Drop for Attempts<'_> {
    fn drop(&mut self) {
        if self.counted.load(Ordering::Relaxed)
            && self.readiness.retrying.fetch_sub(1, Ordering::Relaxed) == 1
        {
            info!(
                operation = self.what,
                about = self.about,
                "engine ready again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload over max_payload, as kv.create reports it, is permanent; a timeout is not.
    #[test]
    fn max_payload_through_kv_create_is_permanent() {
        let publish = jetstream::context::PublishError::with_source(
            PublishErrorKind::MaxPayloadExceeded,
            "Payload size limit of 1048576 exceeded by message size of 1500000",
        );
        let update: kv::UpdateError = publish.into();
        let create: kv::CreateError = update.into();
        assert_eq!(create.kind(), kv::CreateErrorKind::Other);
        let why = permanent(&create).expect("permanent");
        assert!(why.starts_with("payload too large"), "{why}");

        let timeout: kv::CreateError = kv::UpdateError::new(kv::UpdateErrorKind::TimedOut).into();
        assert_eq!(permanent(&timeout), None);
        let no_stream = jetstream::context::PublishError::new(PublishErrorKind::StreamNotFound);
        assert_eq!(permanent(&no_stream), None);
    }

    /// JetStream API errors are permanent by code; an unavailable cluster is transient.
    #[test]
    fn jetstream_codes() {
        let api = |code: u64| -> jetstream::Error {
            serde_json::from_value(serde_json::json!({
                "code": 400, "err_code": code, "description": "x"
            }))
            .expect("jetstream error")
        };
        let wrapped = |code| {
            jetstream::context::PublishError::with_source(PublishErrorKind::Other, api(code))
        };
        assert!(permanent(&wrapped(10054)).is_some());
        assert!(permanent(&wrapped(10003)).is_some());
        assert!(permanent(&wrapped(10008)).is_none());
        let invalid = kv::CreateError::new(kv::CreateErrorKind::InvalidKey);
        assert!(permanent(&invalid).is_some());
    }

    /// A denied publish recorded from the server's -ERR makes a later timeout permanent for
    /// that subject only, and only after the operation started.
    #[test]
    fn permission_violation_is_matched_by_subject() {
        let start = Instant::now();
        note_server_error("Permissions Violation for Publish to \"$KV.bridge_orders.A.denied\"");
        note_server_error("some other error");
        let timeout = jetstream::context::PublishError::new(PublishErrorKind::TimedOut);
        assert!(permanent_on(&timeout, "$KV.bridge_orders.A.denied", start).is_some());
        assert!(permanent_on(&timeout, "$KV.bridge_orders.A.other", start).is_none());
        let later = Instant::now() + Duration::from_secs(1);
        assert!(permanent_on(&timeout, "$KV.bridge_orders.A.denied", later).is_none());
    }

    /// Readiness counts operations in retry, not retries.
    #[test]
    fn readiness_counts_operations() {
        let r = Readiness::default();
        {
            let a = r.operation("kv create", "k1");
            a.retrying(&"e", Duration::ZERO);
            a.retrying(&"e", Duration::ZERO);
            let b = r.operation("kv update", "k2");
            b.retrying(&"e", Duration::ZERO);
            assert_eq!(r.retrying.load(Ordering::Relaxed), 2);
        }
        assert_eq!(r.retrying.load(Ordering::Relaxed), 0);
        let quiet = r.operation("kv entry", "k3");
        drop(quiet);
        assert_eq!(r.retrying.load(Ordering::Relaxed), 0);
    }
}
