//! Report publishing: execution reports to EXECUTIONS, and reading back the last report stored
//! for an order.
//!
//! EXECUTIONS is a projection of the engine's journal (`journal.rs`): every report published
//! here is already in a stored journal entry, together with every other report of its
//! execution, so no crash can leave a taker filled while a maker is not (what was bought always
//! equals what was sold); a crash between the entry and its reports delays them until the
//! journal is repaired (`repair.rs`). Reports are published one message each, pipelined (all
//! sent, then every ack awaited), in the order they were made: one connection, so EXECUTIONS
//! holds them in that order. `Nats-Msg-Id` = exec id (`<engine_order_id>-<seq>`, stable across
//! restarts): a retry, or a repair, of a report already stored is answered as a duplicate.
//!
//! Every report carries its link in this engine's hash chain (`chain.rs`). A set of reports is
//! linked once, in order, before its first attempt, so a retry re-sends identical bytes and
//! headers; the chain's head advances only once every report is stored. When the server answers
//! that a report was already stored, the head is read back from the stream ([`head`]): what is
//! stored is what the next report must link to. At start-up the head is found the same way,
//! before anything is published.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_nats::jetstream::{self, stream::Stream as JsStream};
use async_nats::HeaderMap;
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

mod head;
mod subjects;

pub use subjects::Originals;

/// Report publishes awaiting their JetStream ack at once, at most (see `Reports::send`).
const ACKS_IN_FLIGHT: usize = 1024;

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

/// The stream EXECUTIONS, as the engine writes and reads it.
pub struct Reports {
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

    /// Publishes reports (groups of them, in order; see the module docs), retried whole. A
    /// permanent failure is not retried: it stops the engine at once (the journal holds the
    /// reports; the restarted engine's repair publishes them).
    pub async fn publish(&self, groups: Vec<Vec<Tagged<'_>>>) -> Result<(), PublishError> {
        let reports: Vec<Tagged<'_>> = groups.into_iter().flatten().collect();
        if reports.is_empty() {
            return Ok(());
        }
        let about = reports[0].1;
        let started = Instant::now();
        // Encoded and linked once: every attempt sends these exact bytes and headers.
        let payloads: Vec<Bytes> = reports
            .iter()
            .map(|(r, _)| Bytes::from(r.encode_to_vec()))
            .collect();
        let links = self.link(&payloads);
        let permanent = |e: &async_nats::Error| {
            reports.iter().find_map(|(r, _)| {
                let subject = self.originals.subject(r);
                jetstream_errors::permanent_on(e.as_ref(), &subject, started)
            })
        };
        let attempts = self
            .readiness
            .operation("publish reports", &about.correlation_id);
        let published = (|| self.send(&reports, &payloads, &links))
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
        for (r, _) in &reports {
            self.metrics.report(r.exec_type);
        }
        self.originals.forget_ended(reports.iter().map(|(r, _)| *r));
        match committed {
            Committed::Stored => self.set_head(last),
            Committed::Duplicate => {
                // Stored by an earlier attempt: normally these very links, but the stream,
                // not this process, knows what the next report must link to.
                let head = self.find_head().await?;
                if head == last {
                    info!(correlation_id = %about.correlation_id, trace_id = %about.trace_id, reports = reports.len(), "reports already stored by an earlier attempt; chain head confirmed from the stream");
                } else {
                    warn!(correlation_id = %about.correlation_id, trace_id = %about.trace_id, stored_head = %chain::to_hex(&head), sent_head = %chain::to_hex(&last), "a duplicate publish found another chain head stored; continuing from the stored one");
                }
                self.set_head(head);
            }
        }
        for ((r, trace), l) in reports.iter().zip(&links) {
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

    /// One attempt: every report sent, pipelined with at most [`ACKS_IN_FLIGHT`] acks
    /// outstanding (async-nats holds a permit per unanswered publish, 5,000 by default, and a
    /// publish past them waits for one: awaiting none while sending more would stall), in
    /// order. `payloads` and `links` are the reports', index for index.
    async fn send(
        &self,
        reports: &[Tagged<'_>],
        payloads: &[Bytes],
        links: &[Link],
    ) -> Result<Committed, async_nats::Error> {
        let half = reports.len().div_ceil(2);
        let has_fills = reports
            .iter()
            .any(|(r, _)| r.exec_type == pb::ExecType::Trade as i32);
        let mut committed = Committed::Stored;
        let mut acks: std::collections::VecDeque<jetstream::context::PublishAckFuture> =
            std::collections::VecDeque::with_capacity(ACKS_IN_FLIGHT);
        for (i, (r, trace)) in reports.iter().enumerate() {
            if acks.len() == ACKS_IN_FLIGHT {
                if let Some(ack) = acks.pop_front() {
                    if ack.await?.duplicate {
                        committed = Committed::Duplicate;
                    }
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert(contract::HEADER_MSG_ID, r.exec_id.as_str());
            trace.insert_into(&mut headers);
            for (name, value) in links[i].headers(&self.cfg.engine_id) {
                headers.insert(name, value.as_str());
            }
            let subject = self.originals.subject(r);
            acks.push_back(
                self.js
                    .publish_with_headers(subject, headers, payloads[i].clone())
                    .await?,
            );
            if i + 1 == half && has_fills && reports.len() > 1 {
                // Half of an execution's reports sent: its journal entry holds all of them.
                self.failpoint.reached("mid_publish").await;
            }
        }
        for ack in acks {
            if ack.await?.duplicate {
                committed = Committed::Duplicate;
            }
        }
        Ok(committed)
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
