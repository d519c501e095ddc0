//! Report publishing: execution reports to EXECUTIONS, one fact at a time, and reading back
//! the last report stored for an order.
//!
//! Everything one incoming order does to the book (its own reports, and the TRADE report of
//! every resting order it traded with, seeded liquidity included) is one fact: it is
//! committed to EXECUTIONS as one atomic batch (ADR-50; the stream has `allow_atomic`), so
//! after any crash either every report of an execution is stored or none is, and what was
//! bought always equals what was sold. Recovery rebuilds each order from its last stored
//! report (`recovery.rs`); it never needs to complete half an execution.
//!
//! Batches are committed one after the other (each waits for its commit's ack), so EXECUTIONS
//! holds executions in the order the venue performed them. A batch that fails is retried
//! whole under a new batch id with the same `Nats-Msg-Id`s: if an earlier attempt did commit
//! (only its ack was lost), the server refuses the retry as "contains duplicate message id"
//! (10201), which means done.
//!
//! Every report carries its link in this engine's hash chain (`chain.rs`). A batch is linked
//! once, in order, before its first attempt, so a retry re-sends identical bytes and headers;
//! the chain's head advances only once the batch is committed. When the server answers that
//! the batch (or a single report) was already stored, the head is read back from the stream
//! ([`head`]): what is stored is what the next report must link to. At start-up the head is
//! found the same way, before anything is published.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_nats::jetstream::{self, stream::Stream as JsStream, ErrorCode};
use async_nats::{Client, HeaderMap};
use backon::Retryable;
use bytes::Bytes;
use prost::Message as _;
use tracing::{debug, error, info, warn};

use crate::chain::{self, Chain, Link};
use crate::config::Config;
use crate::contract;
use crate::engine_key::EngineKey;
use crate::error::{ChainError, PublishError, SetupError};
use crate::failpoint::Failpoint;
use crate::jetstream_errors::{self, Readiness};
use crate::metrics::Metrics;
use crate::proto::v1 as pb;
use crate::retry;
use crate::trace::Trace;

/// Messages in one atomic batch at most: nats-server's default `max_batch_size`.
pub const MAX_ATOMIC_BATCH: usize = 1000;

/// "atomic publish batch contains duplicate message id": a retried batch already committed.
const BATCH_ALREADY_COMMITTED: ErrorCode = ErrorCode(10201);

mod head;
mod subjects;

pub use subjects::Originals;

/// How an attempt ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    /// Stored now.
    Stored,
    /// The server already held it (an earlier attempt's ack was lost).
    Duplicate,
}

/// A report and the ids (correlation, trace) of the request that caused it: each report is
/// published with them (`Bridge-Correlation-Id`, `traceparent`) and logged under them.
pub type Tagged<'a> = (&'a pb::ExecutionReport, &'a Trace);

/// Packs groups (each one fact), in order, into batches of at most [`MAX_ATOMIC_BATCH`]
/// reports without splitting a group. A group larger than a batch is split: only groups of
/// independent reports can be (an execution is bounded by the book's fill limit).
pub fn pack<'a>(groups: Vec<Vec<Tagged<'a>>>) -> Vec<Vec<Tagged<'a>>> {
    let mut out: Vec<Vec<Tagged<'a>>> = Vec::new();
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        match out.last_mut() {
            Some(last) if last.len() + group.len() <= MAX_ATOMIC_BATCH => last.extend(group),
            _ if group.len() <= MAX_ATOMIC_BATCH => out.push(group),
            _ => out.extend(group.chunks(MAX_ATOMIC_BATCH).map(<[_]>::to_vec)),
        }
    }
    out
}

/// The stream EXECUTIONS, as the engine writes and reads it.
pub struct Reports {
    client: Client,
    js: jetstream::Context,
    executions: JsStream,
    cfg: Config,
    readiness: Arc<Readiness>,
    failpoint: Failpoint,
    /// Signs each link; `None` (no `nkey_seed_file`) leaves the links unsigned.
    key: Option<Arc<EngineKey>>,
    /// This engine's chain; its head is the digest of its last committed report. Only the
    /// engine's task touches it, never across an await.
    chain: Mutex<Chain>,
    /// Counts the reports stored (`bridge_engine_reports_total`).
    metrics: Arc<Metrics>,
    /// The original client order id of each replaced order: its reports' subject.
    pub originals: Originals,
}

impl Reports {
    /// Binds to the provisioned stream (the engine role may not create it). The chain starts
    /// at genesis until [`Reports::open_chain`] finds its head.
    pub async fn bind(
        client: &Client,
        js: &jetstream::Context,
        cfg: &Config,
        readiness: Arc<Readiness>,
        failpoint: Failpoint,
        key: Option<Arc<EngineKey>>,
        metrics: Arc<Metrics>,
    ) -> Result<Reports, SetupError> {
        let executions = js
            .get_stream(contract::EXECUTIONS_STREAM)
            .await
            .map_err(|e| SetupError::new("stream EXECUTIONS", e))?;
        Ok(Reports {
            client: client.clone(),
            js: js.clone(),
            executions,
            cfg: cfg.clone(),
            readiness,
            failpoint,
            key,
            chain: Mutex::new(Chain::new(cfg.engine_id.clone(), chain::GENESIS)),
            metrics,
            originals: Originals::default(),
        })
    }

    /// Finds this engine's chain head in EXECUTIONS ([`head`]); call it before publishing.
    pub async fn open_chain(&self) -> Result<(), ChainError> {
        let head = self.find_head().await?;
        self.set_head(head);
        Ok(())
    }

    fn set_head(&self, head: chain::Digest) {
        self.chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance(head);
    }

    /// The links of a batch's payloads, continuing from the head (which does not move).
    fn link(&self, payloads: &[Bytes]) -> Vec<Link> {
        self.chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .links(payloads, self.key.as_deref())
    }

    fn backoff(&self) -> retry::Backoff {
        retry::Backoff::from_config(&self.cfg)
    }

    /// Publishes groups of reports, each group atomically (see the module docs).
    pub async fn publish(&self, groups: Vec<Vec<Tagged<'_>>>) -> Result<(), PublishError> {
        for batch in pack(groups) {
            self.publish_batch(&batch).await?;
        }
        Ok(())
    }

    /// One atomic batch, retried whole. A permanent failure is not retried: it stops the
    /// engine at once (an executed fill nobody can see must not be left behind).
    async fn publish_batch(&self, batch: &[Tagged<'_>]) -> Result<(), PublishError> {
        let about = batch[0].1;
        let started = Instant::now();
        // Encoded and linked once: every attempt sends these exact bytes and headers.
        let payloads: Vec<Bytes> = batch
            .iter()
            .map(|(r, _)| Bytes::from(r.encode_to_vec()))
            .collect();
        let links = self.link(&payloads);
        let permanent = |e: &async_nats::Error| {
            batch.iter().find_map(|(r, _)| {
                let subject = self.originals.subject(r);
                jetstream_errors::permanent_on(e.as_ref(), &subject, started)
            })
        };
        let attempts = self
            .readiness
            .operation("publish reports", &about.correlation_id);
        let published = (|| self.commit(batch, &payloads, &links))
            .retry(self.backoff())
            .when(|e| permanent(e).is_none())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        let committed = match published {
            Ok(committed) => committed,
            Err(e) => {
                if let Some(why) = permanent(&e) {
                    error!(correlation_id = %about.correlation_id, trace_id = %about.trace_id, error = %why, "report publish refused for good; not retried");
                }
                return Err(PublishError::Batch(e));
            }
        };
        let last = links.last().map_or(chain::GENESIS, |l| l.digest);
        for (r, _) in batch {
            self.metrics.report(r.exec_type);
        }
        self.originals.forget_ended(batch.iter().map(|(r, _)| *r));
        match committed {
            Committed::Stored => self.set_head(last),
            Committed::Duplicate => {
                // Stored by an earlier attempt: normally these very links, but the stream,
                // not this process, knows what the next report must link to.
                let head = self.find_head().await?;
                if head == last {
                    info!(correlation_id = %about.correlation_id, trace_id = %about.trace_id, reports = batch.len(), "reports already stored by an earlier attempt; chain head confirmed from the stream");
                } else {
                    warn!(correlation_id = %about.correlation_id, trace_id = %about.trace_id, stored_head = %chain::to_hex(&head), sent_head = %chain::to_hex(&last), "a duplicate publish found another chain head stored; continuing from the stored one");
                }
                self.set_head(head);
            }
        }
        for ((r, trace), l) in batch.iter().zip(&links) {
            debug!(
                correlation_id = %trace.correlation_id,
                trace_id = %trace.trace_id,
                client_order_id = %r.client_order_id,
                account = %r.account,
                exec_id = %r.exec_id,
                exec_type = r.exec_type,
                order_status = r.order_status,
                chain_digest = %chain::to_hex(&l.digest),
                "report published"
            );
        }
        Ok(())
    }

    /// One attempt: every report but the last is staged with a core publish, the last commits
    /// the batch and is acknowledged. A single report is a plain JetStream publish.
    /// `payloads` and `links` are the batch's, index for index.
    async fn commit(
        &self,
        batch: &[Tagged<'_>],
        payloads: &[Bytes],
        links: &[Link],
    ) -> Result<Committed, async_nats::Error> {
        let batch_id = format!("{}-{:016x}", self.cfg.engine_id, fastrand::u64(..));
        let batch_id = &batch_id[batch_id.len().saturating_sub(64)..];
        let last = batch.len() - 1;
        let has_fills = batch
            .iter()
            .any(|(r, _)| r.exec_type == pb::ExecType::Trade as i32);
        for (i, (r, trace)) in batch.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(contract::HEADER_MSG_ID, r.exec_id.as_str());
            trace.insert_into(&mut headers);
            for (name, value) in links[i].headers(&self.cfg.engine_id) {
                headers.insert(name, value.as_str());
            }
            if last > 0 {
                headers.insert(contract::HEADER_BATCH_ID, batch_id);
                headers.insert(
                    contract::HEADER_BATCH_SEQUENCE,
                    (i + 1).to_string().as_str(),
                );
            }
            let subject = self.originals.subject(r);
            let payload = payloads[i].clone();
            if i < last {
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await?;
                if i + 1 == last.div_ceil(2) && has_fills {
                    self.failpoint.reached("mid_publish").await;
                }
                continue;
            }
            if last > 0 {
                headers.insert(contract::HEADER_BATCH_COMMIT, "1");
            }
            let acked = async {
                self.js
                    .publish_with_headers(subject, headers, payload)
                    .await?
                    .await
            }
            .await;
            return match acked {
                Ok(ack) if ack.duplicate => Ok(Committed::Duplicate),
                Ok(_) => Ok(Committed::Stored),
                Err(e) if already_committed(&e) => Ok(Committed::Duplicate),
                Err(e) => Err(e.into()),
            };
        }
        Ok(Committed::Stored)
    }

    /// True when EXECUTIONS already holds `report` or a later report of its order, whose
    /// original client order id is `original` (its reports' subject).
    pub async fn stored(
        &self,
        original: &str,
        report: &pb::ExecutionReport,
    ) -> Result<bool, PublishError> {
        let subject = contract::executions(&report.account, original);
        Ok(self
            .last_stored(&subject)
            .await?
            .is_some_and(|stored| stored.seq >= report.seq))
    }

    /// The last report EXECUTIONS holds on `subject` (one order's), read from the stream
    /// leader, retried while JetStream is unavailable.
    pub async fn last_stored(
        &self,
        subject: &str,
    ) -> Result<Option<pb::ExecutionReport>, PublishError> {
        let attempts = self.readiness.operation("last report", subject);
        let last = (|| self.executions.get_last_raw_message_by_subject(subject))
            .retry(self.backoff())
            .when(|e: &jetstream::stream::LastRawMessageError| {
                e.kind() != jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    && jetstream_errors::permanent(e).is_none()
            })
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        match last {
            Ok(m) => Ok(pb::ExecutionReport::decode(m.payload).ok()),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => Err(PublishError::LastReport {
                subject: subject.into(),
                source: e,
            }),
        }
    }
}

/// The server refused a retried batch because its first attempt was committed.
fn already_committed(e: &jetstream::context::PublishError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(j) = c.downcast_ref::<jetstream::Error>() {
            return j.error_code() == BATCH_ALREADY_COMMITTED;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: usize) -> pb::ExecutionReport {
        pb::ExecutionReport {
            exec_id: format!("e-{n}"),
            ..Default::default()
        }
    }

    /// Groups are packed in order into batches of at most MAX_ATOMIC_BATCH, never split unless
    /// one alone is larger than a batch.
    #[test]
    fn packing_keeps_groups_whole_and_in_order() {
        let reports: Vec<_> = (0..2500).map(report).collect();
        let trace = Trace::recovered("c");
        let tag = |range: std::ops::Range<usize>| -> Vec<Tagged<'_>> {
            reports[range].iter().map(|r| (r, &trace)).collect()
        };
        let batches = pack(vec![
            tag(0..600),
            tag(600..900),
            tag(900..1500),
            tag(1500..2500),
        ]);
        let sizes: Vec<_> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [900, 600, 1000]);
        let order: Vec<_> = batches
            .iter()
            .flatten()
            .map(|(r, _)| r.exec_id.clone())
            .collect();
        let want: Vec<_> = (0..2500).map(|n| format!("e-{n}")).collect();
        assert_eq!(order, want);
        assert_eq!(
            pack(vec![tag(0..1200)])
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [1000, 200]
        );
        assert!(pack(vec![vec![]]).is_empty());
    }
}
