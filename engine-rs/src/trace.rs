//! One trace per order: the W3C `traceparent` header (Trace Context, version `00`) and the ids
//! every log line about an order carries. Pure: no I/O.
//!
//! A request (or queued message) names its trace in `traceparent`
//! (`00-<trace-id>-<parent-id>-<flags>`, lowercase hex, 55 characters) and its correlation id
//! in `Bridge-Correlation-Id`, the join key of the logs. [`Trace::of`] reads both by the same
//! rule as the client (`bridge/tracecontext.py`), so that one id joins everything:
//! - a valid `traceparent` gives the trace id; otherwise (absent or invalid: the trace is
//!   restarted) the correlation id is the trace id when it is one (32 lowercase hex digits, not
//!   all zero), else a fresh trace id is drawn;
//! - no correlation id: the trace id is the correlation id.
//!
//! Validity (W3C): each field lowercase hex of its length; an all-zero trace id or parent id
//! is invalid; version `ff` is invalid; version `00` is exactly 55 characters; a higher version
//! is read by its first 55 characters when the 56th is a dash or the value ends there.
//!
//! The engine records no spans of its own: it passes the `traceparent` it received on to what
//! it sends about the order (its execution reports, a cancel relayed to a peer), rewritten as
//! version `00`; a restarted trace gets a fresh parent id. Recovery after a restart rebuilds
//! the ids from the stored correlation id ([`Trace::recovered`]).

use async_nats::HeaderMap;

use crate::contract;
use crate::intake::bounded_correlation_id;

const LENGTH: usize = 55;
const FLAGS_SAMPLED: &str = "01";

/// The parts of a valid `traceparent` (borrowed from the header value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent<'a> {
    pub trace_id: &'a str,
    pub parent_id: &'a str,
    pub flags: &'a str,
}

impl TraceParent<'_> {
    /// The value as this engine sends it on (version `00`).
    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn not_zero(s: &str) -> bool {
    s.bytes().any(|b| b != b'0')
}

/// True when `s` is a valid W3C trace id: 32 lowercase hex digits, not all zero.
pub fn is_trace_id(s: &str) -> bool {
    lower_hex(s, 32) && not_zero(s)
}

/// A `traceparent` value read by the W3C rules; `None` when it is invalid (the receiver then
/// restarts the trace).
pub fn parse(value: &str) -> Option<TraceParent<'_>> {
    if value.len() < LENGTH || !value.is_char_boundary(LENGTH) {
        return None;
    }
    let version = &value[..2];
    if !lower_hex(version, 2) || version == "ff" {
        return None;
    }
    if version == "00" && value.len() != LENGTH {
        return None;
    }
    if value.len() > LENGTH && value.as_bytes()[LENGTH] != b'-' {
        return None;
    }
    let bytes = value.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    let valid = is_trace_id(trace_id)
        && lower_hex(parent_id, 16)
        && not_zero(parent_id)
        && lower_hex(flags, 2);
    valid.then_some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// A fresh trace id (32 lowercase hex digits, not all zero).
pub fn new_trace_id() -> String {
    format!("{:032x}", fastrand::u128(1..))
}

/// A fresh parent (span) id (16 lowercase hex digits, not all zero).
pub fn new_span_id() -> String {
    format!("{:016x}", fastrand::u64(1..))
}

/// The ids of one request or queued message, as logged and passed on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// The correlation id (cut to its limit; the trace id when the caller gave none).
    pub correlation_id: String,
    /// The trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// The `traceparent` sent on with what the engine publishes about the order.
    pub traceparent: String,
    /// The sender's contract version as its log span shows it (`Bridge-Schema-Version`, 1.0
    /// when absent; see [`crate::schema_version`]); empty for an order recovered after a
    /// restart.
    pub schema_version: String,
}

impl Trace {
    /// The ids of a message, from its `Bridge-Correlation-Id` and `traceparent` headers (see
    /// the module docs).
    pub fn of(headers: Option<&HeaderMap>) -> Trace {
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
                .unwrap_or("")
        };
        let correlation_id = bounded_correlation_id(header(contract::HEADER_CORRELATION_ID));
        let version = headers
            .and_then(|h| h.get(contract::HEADER_SCHEMA_VERSION))
            .map(|v| v.as_str());
        let checked = crate::schema_version::check(version, crate::schema_version::ours());
        Trace {
            schema_version: checked.span_value(),
            ..Trace::from_parts(correlation_id, parse(header(contract::HEADER_TRACEPARENT)))
        }
    }

    /// The ids of an order recovered after a restart: its stored correlation id; the trace id
    /// derived from it as for a message without `traceparent`.
    pub fn recovered(correlation_id: &str) -> Trace {
        Trace::from_parts(bounded_correlation_id(correlation_id), None)
    }

    /// The ids a journal entry kept for a report (`repair.rs`): its correlation id and
    /// `traceparent` (a new one when that does not parse).
    pub fn journaled(correlation_id: &str, traceparent: &str) -> Trace {
        Trace::from_parts(bounded_correlation_id(correlation_id), parse(traceparent))
    }

    fn from_parts(correlation_id: &str, parent: Option<TraceParent<'_>>) -> Trace {
        let (trace_id, traceparent) = match parent {
            Some(p) => (p.trace_id.to_string(), p.header()),
            None => {
                let trace_id = if is_trace_id(correlation_id) {
                    correlation_id.to_string()
                } else {
                    new_trace_id()
                };
                let traceparent = format!("00-{trace_id}-{}-{FLAGS_SAMPLED}", new_span_id());
                (trace_id, traceparent)
            }
        };
        let correlation_id = if correlation_id.is_empty() {
            trace_id.clone()
        } else {
            correlation_id.to_string()
        };
        Trace {
            correlation_id,
            trace_id,
            traceparent,
            schema_version: String::new(),
        }
    }

    /// The headers that carry these ids on a message the engine sends about the order.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(
            contract::HEADER_CORRELATION_ID,
            self.correlation_id.as_str(),
        );
        headers.insert(contract::HEADER_TRACEPARENT, self.traceparent.as_str());
    }
}

#[cfg(test)]
mod tests;
