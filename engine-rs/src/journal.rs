//! The engine's journal: stream JOURNAL, subject `bridge.v1.journal.<engine_id>`, one
//! [`JournalEntry`] per commit group (everything one command wrote: order records and execution
//! reports). The entry is the durable fact: JOURNAL is persisted per message (fsynced with the
//! server's `sync_interval: always`), and nothing of a group is acknowledged or published before
//! its entry is stored. EXECUTIONS and the order store are projections written afterwards
//! (`engine.rs`, `Engine::commit`), repaired from here after a crash (`repair.rs`).
//!
//! The engine's entries form a chain no second writer can fork: each names the stream sequence
//! of the previous one and is published on that condition (`Nats-Expected-Last-Subject-Sequence`),
//! with `Nats-Msg-Id = <engine_id>:<previous sequence>`, so a retry whose first attempt was
//! stored is answered as a duplicate, and an entry appended by anyone else makes the next append
//! fail: [`JournalError::Fenced`] stops the engine before it writes anything more.
//!
//! An append that fails for good, or past its retries, stops the engine ([`JournalError`]): a
//! journal write is never assumed durable because a retry "probably" worked, and never retried
//! as if a refused write (e.g. the server's disk failing) had not happened.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::Stream as JsStream};
use async_nats::HeaderMap;
use backon::Retryable;
use bytes::Bytes;
use prost::Message as _;
use tracing::{debug, info};

use crate::config::Config;
use crate::contract;
use crate::error::{JournalError, SetupError};
use crate::jetstream_errors::{self, Readiness};
use crate::proto::state::JournalEntry;
use crate::retry;

/// The largest entry the engine writes (the server's `max_payload` is 1 MiB; headers and
/// margin stay below it). A commit group larger than this is written as several entries.
pub const MAX_ENTRY_BYTES: usize = 900 * 1024;

/// One engine's journal, as that engine writes and reads it.
pub struct Journal {
    js: jetstream::Context,
    stream: JsStream,
    subject: String,
    engine_id: String,
    cfg: Config,
    readiness: Arc<Readiness>,
    /// Stream sequence of this engine's last entry (0: none yet).
    last_seq: u64,
    /// This writer's epoch (0: unpartitioned): in every entry and in its Nats-Msg-Id, so that
    /// two owners of one partition never share a de-duplication id.
    epoch: u64,
}

impl Journal {
    /// Binds to the provisioned stream (the engine role may not create it). [`Journal::open`]
    /// finds where the journal ends.
    pub async fn bind(
        js: &jetstream::Context,
        cfg: &Config,
        readiness: Arc<Readiness>,
    ) -> Result<Journal, SetupError> {
        let stream = js
            .get_stream(contract::JOURNAL_STREAM)
            .await
            .map_err(|e| SetupError::new("stream JOURNAL", e))?;
        Ok(Journal {
            js: js.clone(),
            stream,
            subject: contract::journal(&cfg.engine_id),
            engine_id: cfg.engine_id.clone(),
            cfg: cfg.clone(),
            readiness,
            last_seq: 0,
            epoch: 0,
        })
    }

    fn backoff(&self) -> retry::Backoff {
        retry::Backoff::from_config(&self.cfg)
    }

    /// The subject of this engine's journal.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Stream sequence of this engine's last entry (0: none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Reads where this engine's journal ends (from the stream leader) and continues from
    /// there. Returns the last entry and its sequence, if any.
    pub async fn open(&mut self) -> Result<Option<(u64, JournalEntry)>, JournalError> {
        let last = self.read_last().await?;
        self.last_seq = last.as_ref().map_or(0, |(seq, _)| *seq);
        info!(subject = %self.subject, last_seq = self.last_seq, "journal opened");
        Ok(last)
    }

    async fn read_last(&self) -> Result<Option<(u64, JournalEntry)>, JournalError> {
        match self.read_last_raw().await? {
            Some((seq, payload)) => Ok(Some((seq, self.decode(seq, payload)?))),
            None => Ok(None),
        }
    }

    /// The last message on this engine's subject, as stored (whoever wrote it).
    async fn read_last_raw(&self) -> Result<Option<(u64, Bytes)>, JournalError> {
        use jetstream::stream::LastRawMessageErrorKind as Kind;
        let attempts = self
            .readiness
            .operation("journal last entry", &self.subject);
        let last = (|| self.stream.get_last_raw_message_by_subject(&self.subject))
            .retry(self.backoff())
            .when(|e: &jetstream::stream::LastRawMessageError| {
                e.kind() != Kind::NoMessageFound && jetstream_errors::permanent(e).is_none()
            })
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        match last {
            Ok(m) => Ok(Some((m.sequence, m.payload))),
            Err(e) if e.kind() == Kind::NoMessageFound => Ok(None),
            Err(e) => Err(self.read_error(0, e.to_string())),
        }
    }

    /// The entry at stream sequence `seq` (one of this engine's), from the stream leader.
    pub async fn entry(&self, seq: u64) -> Result<JournalEntry, JournalError> {
        let attempts = self.readiness.operation("journal entry", &self.subject);
        let got = (|| self.stream.get_raw_message(seq))
            .retry(self.backoff())
            .when(|e: &jetstream::stream::RawMessageError| jetstream_errors::permanent(e).is_none())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        let m = got.map_err(|e| self.read_error(seq, e.to_string()))?;
        if m.subject.as_str() != self.subject {
            return Err(self.read_error(seq, format!("subject {} is not ours", m.subject)));
        }
        self.decode(seq, m.payload)
    }

    fn decode(&self, seq: u64, payload: Bytes) -> Result<JournalEntry, JournalError> {
        JournalEntry::decode(payload).map_err(|e| self.read_error(seq, e.to_string()))
    }

    fn read_error(&self, seq: u64, why: String) -> JournalError {
        JournalError::Read {
            subject: self.subject.clone(),
            seq,
            why,
        }
    }

    /// Takes the journal over as the writer of `epoch` (a partition's new owner, after repair
    /// and recovery read it to its end): appends the fence, an empty entry of that epoch, so
    /// that the previous owner's next append fails ([`JournalError::Fenced`]).
    pub async fn fence(&mut self, epoch: u64) -> Result<u64, JournalError> {
        self.epoch = epoch;
        let seq = self
            .append(JournalEntry {
                written_at_unix_ns: crate::engine::now_ns(),
                ..JournalEntry::default()
            })
            .await?;
        info!(subject = %self.subject, seq, epoch, "journal fenced: this engine is its only writer from here");
        Ok(seq)
    }

    /// Appends one entry after this engine's last one; returns its stream sequence once the
    /// server has stored it. `entry.prev_stream_seq` and `entry.engine_id` are set here.
    pub async fn append(&mut self, mut entry: JournalEntry) -> Result<u64, JournalError> {
        let prev = self.last_seq;
        entry.prev_stream_seq = prev;
        entry.engine_id.clone_from(&self.engine_id);
        entry.epoch = self.epoch;
        let payload = Bytes::from(entry.encode_to_vec());
        if payload.len() > MAX_ENTRY_BYTES {
            return Err(JournalError::TooLarge {
                subject: self.subject.clone(),
                bytes: payload.len(),
                limit: MAX_ENTRY_BYTES,
            });
        }
        // With the epoch: a stale owner appending after the same entry as the new owner must
        // not be answered "duplicate" with the new owner's sequence.
        let msg_id = match self.epoch {
            0 => format!("{}:{prev}", self.engine_id),
            epoch => format!("{}:{epoch}:{prev}", self.engine_id),
        };
        let started = Instant::now();
        let subject = self.subject.clone();
        let attempt = || async {
            let mut headers = HeaderMap::new();
            headers.insert(contract::HEADER_MSG_ID, msg_id.as_str());
            headers.insert(
                contract::HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE,
                prev.to_string().as_str(),
            );
            self.js
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await?
                .await
        };
        let attempts = self.readiness.operation("journal append", &self.subject);
        let appended = attempt
            .retry(self.backoff())
            .when(|e: &jetstream::context::PublishError| {
                e.kind() != PublishErrorKind::WrongLastSequence
                    && jetstream_errors::permanent_on(e, &subject, started).is_none()
            })
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        let seq = match appended {
            Ok(ack) => ack.sequence,
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.stored_by_us(prev, &payload).await?
            }
            Err(e) => {
                return Err(JournalError::Append {
                    subject,
                    prev,
                    source: e.into(),
                })
            }
        };
        self.last_seq = seq;
        debug!(subject = %self.subject, seq, prev, bytes = payload.len(), "journal entry stored");
        Ok(seq)
    }

    /// After "wrong last sequence": the journal's last message is either ours (an earlier
    /// attempt was stored and only its answer was lost, outside the duplicate window: the very
    /// bytes of this entry, which names `prev`) or another writer's, whatever it holds, even
    /// bytes that are no journal entry (fenced).
    async fn stored_by_us(&self, prev: u64, payload: &Bytes) -> Result<u64, JournalError> {
        match self.read_last_raw().await? {
            Some((seq, stored)) if stored == *payload => {
                info!(subject = %self.subject, seq, prev, "journal entry already stored by an earlier attempt");
                Ok(seq)
            }
            found => Err(JournalError::Fenced {
                subject: self.subject.clone(),
                expected: prev,
                found: found.map_or(0, |(seq, _)| seq),
            }),
        }
    }
}
