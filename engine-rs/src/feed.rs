//! Input streams into the engine (orchestrator -> venue) with credit-based flow control, pure
//! (no I/O): which streams are open, how far each is applied and granted, and what one
//! message does. The service layer (`commands/feed.rs`) does the NATS side.
//!
//! Protocol (`schemas/bridge/v1/market_data.proto`): the sender opens a stream with
//! `FeedOpen{stream_id}` (request-reply on `contract::FEED_OPEN`) and gets its first grant,
//! `granted_through = window`. It publishes `FeedMessage`s with sequence 1, 2, ... to
//! `contract::feed_data(stream_id)`, reply subject = its grant inbox, never beyond its
//! grant. The engine applies each in order and, every half window applied, publishes a new
//! grant (`granted_through = applied_through + window`) to the message's reply subject.
//!
//! Refused, never buffered: a message of a stream not open, beyond its credit, or out of
//! order (not `applied_through + 1`) is not applied; a grant carrying the error (and the
//! stream's state) answers it at once. An input of an applied message that is invalid
//! (unknown symbol, a price that is not a positive decimal) is skipped, the message's other
//! inputs applied; the grant answering that message carries the error.
//!
//! Bounds: the engine holds no message (each is applied as it arrives, in the main loop), so
//! its memory is the per-stream state: at most `max_streams` streams (`feed_max_streams`);
//! opening one more forgets the stream idle longest (its sender's next message is refused
//! as "not open" and it re-opens). An honest sender has at most `window` (`feed_window`)
//! messages in flight, so the engine's subscription holds at most window x streams.
//! Re-opening a stream id restarts it at sequence 1.

use std::collections::HashMap;

use crate::fixed;
use crate::proto::v1::{self as pb, FieldError};
use crate::validate::{echo, field_error};

#[cfg(test)]
mod tests;

/// The longest stream id (the contract's subject token rule: `[A-Za-z0-9_-]{1,64}`).
pub const MAX_STREAM_ID_BYTES: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Stream {
    applied: u64,
    granted: u64,
    /// `applied` when the last grant was sent.
    granted_at: u64,
    /// When it was last used (a counter): the stream idle longest is forgotten first.
    used: u64,
}

/// What one message did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Received {
    /// The valid reference prices it carries, in order: (symbol, fixed-point price).
    pub prices: Vec<(String, i64)>,
    /// The grant to publish to the message's reply subject, if one is due.
    pub grant: Option<pb::FeedGrant>,
    /// Whether the message was applied (false: refused whole).
    pub applied: bool,
}

/// Every open input stream.
#[derive(Debug)]
pub struct Feeds {
    window: u64,
    max_streams: usize,
    streams: HashMap<String, Stream>,
    clock: u64,
}

/// Whether `id` is a valid stream id (a subject token).
pub fn valid_stream_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STREAM_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Feeds {
    /// No stream open; `window` (at least 1) messages of credit per grant, at most
    /// `max_streams` (at least 1) open streams.
    pub fn new(window: u64, max_streams: usize) -> Feeds {
        Feeds {
            window: window.max(1),
            max_streams: max_streams.max(1),
            streams: HashMap::new(),
            clock: 0,
        }
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Opens (or restarts) `stream_id`: its first grant. An invalid id: a grant of nothing
    /// with the error. May forget the stream idle longest (see the module doc).
    pub fn open(&mut self, stream_id: &str) -> pb::FeedGrant {
        if !valid_stream_id(stream_id) {
            return refusal(
                stream_id,
                field_error(
                    "stream_id",
                    "pattern",
                    format!(
                        "{} is not 1 to {MAX_STREAM_ID_BYTES} of [A-Za-z0-9_-]",
                        echo(stream_id)
                    ),
                ),
            );
        }
        if !self.streams.contains_key(stream_id) && self.streams.len() >= self.max_streams {
            if let Some(idle) = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            {
                self.streams.remove(&idle);
            }
        }
        let used = self.tick();
        let s = Stream {
            applied: 0,
            granted: self.window,
            granted_at: 0,
            used,
        };
        self.streams.insert(stream_id.to_string(), s);
        grant(stream_id, &s, vec![])
    }

    /// One message of stream `stream_id` (the subject's token): see the module doc.
    /// `known(symbol)`: whether the engine trades that symbol.
    pub fn receive(
        &mut self,
        stream_id: &str,
        msg: &pb::FeedMessage,
        known: impl Fn(&str) -> bool,
    ) -> Received {
        let used = self.tick();
        let half = (self.window / 2).max(1);
        let window = self.window;
        let Some(s) = self.streams.get_mut(stream_id) else {
            let e = field_error(
                "stream_id",
                "open",
                format!(
                    "stream {} is not open (or was forgotten): send FeedOpen first",
                    echo(stream_id)
                ),
            );
            return Received {
                grant: Some(refusal(stream_id, e)),
                ..Received::default()
            };
        };
        s.used = used;
        let seq = msg.sequence;
        let refused = if !msg.stream_id.is_empty() && msg.stream_id != stream_id {
            Some(field_error(
                "stream_id",
                "matches_subject",
                format!(
                    "message {seq}: stream_id {} is not the subject's {}",
                    echo(&msg.stream_id),
                    echo(stream_id)
                ),
            ))
        } else if seq > s.granted {
            Some(field_error(
                "sequence",
                "credit",
                format!(
                    "message {seq} is beyond the credit granted through {}",
                    s.granted
                ),
            ))
        } else if seq != s.applied + 1 {
            Some(field_error(
                "sequence",
                "in_order",
                format!("message {seq} is out of order: expected {}", s.applied + 1),
            ))
        } else {
            None
        };
        if let Some(e) = refused {
            return Received {
                grant: Some(grant(stream_id, s, vec![e])),
                ..Received::default()
            };
        }
        let mut errors = Vec::new();
        let mut prices = Vec::new();
        for (i, rp) in msg.reference_prices.iter().enumerate() {
            if !known(&rp.symbol) {
                errors.push(field_error(
                    &format!("reference_prices[{i}].symbol"),
                    "known_symbol",
                    format!(
                        "message {seq}: {} is not traded by this engine",
                        echo(&rp.symbol)
                    ),
                ));
                continue;
            }
            match rp.price.as_ref().map(fixed::from_decimal) {
                Some(Ok(p)) if p > 0 => prices.push((rp.symbol.clone(), p)),
                _ => errors.push(field_error(
                    &format!("reference_prices[{i}].price"),
                    "positive",
                    format!("message {seq}: the price must be a positive decimal"),
                )),
            }
        }
        s.applied = seq;
        let due = s.applied - s.granted_at >= half || !errors.is_empty();
        let grant = due.then(|| {
            s.granted = s.granted.max(s.applied + window);
            s.granted_at = s.applied;
            grant(stream_id, s, errors)
        });
        Received {
            prices,
            grant,
            applied: true,
        }
    }
}

fn grant(stream_id: &str, s: &Stream, errors: Vec<FieldError>) -> pb::FeedGrant {
    pb::FeedGrant {
        stream_id: stream_id.to_string(),
        granted_through: s.granted,
        applied_through: s.applied,
        errors,
    }
}

/// A grant of nothing, with why.
fn refusal(stream_id: &str, error: FieldError) -> pb::FeedGrant {
    pb::FeedGrant {
        stream_id: stream_id.to_string(),
        granted_through: 0,
        applied_through: 0,
        errors: vec![error],
    }
}
