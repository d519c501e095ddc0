//! Finding this engine's chain head in EXECUTIONS: the digest of the last report it stored.
//!
//! The walk reads EXECUTIONS backwards from its last sequence, from the stream leader
//! (`$JS.API.STREAM.MSG.GET`, which the engine role may use), and asks [`chain::examine`] about
//! each message until it finds this engine's last report (its digest, checked against its
//! payload, is the head), or a report without chain headers, or the stream's first message
//! (both: genesis). Reads go out in windows (1, then 16, then up to 256 in flight), so the
//! usual case (the head is the last message) costs one read.
//!
//! The walk is bounded by `chain_search_limit` sequences. Not finding the head within it
//! refuses the start ([`ChainError::NotFound`]) rather than begin a new chain that the
//! verifier would report as broken; a report of this engine whose digest does not hold refuses
//! it too ([`ChainError::Tampered`]). A sequence that reads as missing (deleted) is counted and
//! logged: a deleted report above the head was possibly this engine's, which its chain cannot
//! show any more, so the walk says so at ERROR; `bridge audit verify` reports the gap.

use futures::{StreamExt, TryStreamExt};
use tracing::{error, info};

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, RawMessageError};
use backon::Retryable;

use super::Reports;
use crate::chain::{self, Digest, Examined, Stored};
use crate::contract;
use crate::error::ChainError;
use crate::jetstream_errors;

/// Reads in flight at most.
const MAX_WINDOW: u64 = 256;

impl Reports {
    /// This engine's chain head (see the module docs).
    pub(super) async fn find_head(&self) -> Result<Digest, ChainError> {
        let engine_id = self.cfg.engine_id.as_str();
        let attempts = self
            .readiness
            .operation("stream info", contract::EXECUTIONS_STREAM);
        let info = (|| self.executions.get_info())
            .retry(self.backoff())
            .when(|e| jetstream_errors::permanent(e).is_none())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await
            .map_err(|e| ChainError::Read(e.into()))?;
        drop(attempts);
        let (first, last) = (info.state.first_sequence.max(1), info.state.last_sequence);
        let limit = self.cfg.chain_search_limit.max(1);
        let floor = first.max(last.saturating_sub(limit - 1));
        let mut walk = Walk::default();
        let mut top = last;
        let mut window = 1;
        while info.state.messages > 0 && top >= floor {
            let low = top.saturating_sub(window - 1).max(floor);
            let mut reads = futures::stream::iter((low..=top).rev())
                .map(|seq| self.message_at(seq))
                .buffered(usize::try_from(window).unwrap_or(1));
            while let Some((seq, message)) = reads.try_next().await? {
                if let Some(found) = walk.step(engine_id, seq, message.as_ref())? {
                    walk.log(engine_id, last, Some(seq));
                    return Ok(found);
                }
            }
            if low == floor {
                break;
            }
            top = low - 1;
            window = (window * 16).min(MAX_WINDOW);
        }
        if floor > first {
            return Err(ChainError::NotFound {
                engine_id: engine_id.into(),
                limit,
                low: floor,
                high: last,
            });
        }
        walk.log(engine_id, last, None);
        Ok(chain::GENESIS)
    }

    /// The message at `seq` from the stream leader; `None` if it is not there (deleted).
    async fn message_at(&self, seq: u64) -> Result<(u64, Option<StreamMessage>), ChainError> {
        let missing = |e: &RawMessageError| e.kind() == LastRawMessageErrorKind::NoMessageFound;
        let read = (|| self.executions.get_raw_message(seq))
            .retry(self.backoff())
            .when(|e| !missing(e) && jetstream_errors::permanent(e).is_none())
            .notify(|e, delay| {
                jetstream_errors::retrying("chain head read", contract::EXECUTIONS_STREAM, e, delay)
            })
            .await;
        match read {
            Ok(m) => Ok((seq, Some(m))),
            Err(e) if missing(&e) => Ok((seq, None)),
            Err(e) => Err(ChainError::Read(e.into())),
        }
    }
}

/// What the walk has seen so far.
#[derive(Default)]
struct Walk {
    read: u64,
    missing: Vec<u64>,
    others: u64,
    unchained_at: Option<u64>,
}

/// At most this many missing sequences are named in the log line.
const NAMED_MISSING: usize = 20;

impl Walk {
    /// One message, walking down: `Some(head)` ends the walk.
    fn step(
        &mut self,
        engine_id: &str,
        seq: u64,
        message: Option<&StreamMessage>,
    ) -> Result<Option<Digest>, ChainError> {
        self.read += 1;
        let Some(m) = message else {
            if self.missing.len() < NAMED_MISSING {
                self.missing.push(seq);
            }
            return Ok(None);
        };
        let header = |name: &str| m.headers.get(name).map(|v| v.as_str());
        let stored = Stored {
            chain: header(contract::HEADER_CHAIN),
            prev: header(contract::HEADER_CHAIN_PREV),
            digest: header(contract::HEADER_CHAIN_DIGEST),
        };
        match chain::examine(engine_id, stored, &m.payload) {
            Examined::Head(digest) => Ok(Some(digest)),
            Examined::Other => {
                self.others += 1;
                Ok(None)
            }
            Examined::Unchained => {
                self.unchained_at = Some(seq);
                Ok(Some(chain::GENESIS))
            }
            Examined::Tampered(why) => Err(ChainError::Tampered {
                seq,
                engine_id: engine_id.into(),
                why,
            }),
        }
    }

    fn log(&self, engine_id: &str, last: u64, found_at: Option<u64>) {
        let what = match (found_at, self.unchained_at) {
            (_, Some(_)) => "hash chain starts at genesis: the reports before it predate the chain",
            (Some(_), None) => "hash chain head found",
            (None, None) => "hash chain starts at genesis: no report of this engine in EXECUTIONS",
        };
        info!(
            engine_id,
            walked = self.read,
            from_seq = last,
            found_at,
            other_chains = self.others,
            "{what}"
        );
        if !self.missing.is_empty() {
            error!(engine_id, missing = ?self.missing, "EXECUTIONS sequences above this engine's chain head are missing (deleted): if one was this engine's report its chain cannot show it; run `bridge audit verify`");
        }
    }
}
