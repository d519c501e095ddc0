//! Repair: the projections (EXECUTIONS and the order store) brought up to this engine's
//! journal, at start-up (before recovery) and after every reconnect (before the next command).
//!
//! Every journal entry is stored before its projection is written (`commit.rs`), so after a
//! crash a projection can lag the journal: the engine died between the two, or the server lost
//! the unflushed tail of an asynchronously persisted projection (`persist_mode: async`; a
//! stream loses a suffix, never a message in the middle). Repair walks the journal backwards
//! from its last entry (each names the previous one) to the first entry whose projection is
//! complete, then re-projects every later entry in order:
//!
//! * a report is published only if EXECUTIONS does not hold it (its order's subject holds no
//!   report with this or a later per-order sequence), so a repair never stores an exec id
//!   twice, inside or outside the duplicate window; it links into the hash chain after the
//!   head EXECUTIONS holds;
//! * a record is written as the entry holds it (later entries, re-projected after it, write
//!   later states).
//!
//! Entries of a commit group whose last entry was never stored are skipped, and another
//! writer's empty entries walked past (`repair/walk.rs`).
//!
//! An entry is complete when every report is stored and every record reads back as the entry
//! holds it or as a later state of it (a later report sequence). A later state means a later
//! write of the order store was kept, and with it (suffix loss) every earlier one.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{info, warn};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::proto::state::{JournalEntry, OrderRecord};
use crate::publish::Tagged;
use crate::trace::Trace;

mod walk;

/// What a repair did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// Journal entries whose projection was written again.
    pub entries: usize,
    /// Reports EXECUTIONS lacked, published.
    pub reports: usize,
    /// Records written again.
    pub records: usize,
}

impl Engine {
    /// Repairs the projections from the journal (see the module docs); reads the chain head
    /// first, since the reports it publishes continue the chain EXECUTIONS holds.
    pub async fn repair(&mut self) -> Result<Repaired, EngineError> {
        let started = Instant::now();
        if self.connects_repaired == 0 {
            self.connects_repaired = self.client.statistics().connects.load(Ordering::Relaxed);
        }
        self.reports.open_chain().await?;
        let Some((_, mut entry)) = self.journal.open().await? else {
            return Ok(Repaired::default());
        };
        let mut behind: Vec<JournalEntry> = Vec::new();
        let mut walk = walk::Walk::default();
        let mut torn = 0;
        loop {
            let prev = entry.prev_stream_seq;
            match walk.step(walk::Part::of(&entry)) {
                walk::Step::Check if self.projected(&entry).await? => break,
                walk::Step::Check => behind.push(entry),
                walk::Step::PassOver => {}
                walk::Step::Torn => torn += 1,
            }
            if prev == 0 {
                break;
            }
            entry = self.journal.entry(prev).await?;
        }
        if torn > 0 {
            warn!(
                entries = torn,
                "journal entries of a commit group whose last entry was never stored skipped: nothing of it was answered; recovery executes its orders again"
            );
        }
        let mut done = Repaired::default();
        for entry in behind.into_iter().rev() {
            let (reports, records) = self.reproject(&entry).await?;
            done.entries += 1;
            done.reports += reports;
            done.records += records;
        }
        if done.entries > 0 {
            info!(
                entries = done.entries,
                reports = done.reports,
                records = done.records,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "projections repaired from the journal"
            );
        }
        Ok(done)
    }

    /// True when EXECUTIONS or the order store's stream is persisted asynchronously
    /// (`persist_mode: async`): a server crash can lose their unflushed tail, so a lost
    /// connection stops the engine ([`crate::connection::stop_before_reconnecting`]).
    pub async fn projections_persisted_async(&self) -> Result<bool, EngineError> {
        use async_nats::jetstream::stream::PersistenceMode;
        let js = async_nats::jetstream::new(self.client.clone());
        let mut persist = Vec::new();
        for name in [
            crate::contract::EXECUTIONS_STREAM.to_string(),
            crate::contract::kv_stream(crate::contract::ORDERS_KV_BUCKET),
        ] {
            let stream = js
                .get_stream(&name)
                .await
                .map_err(|e| crate::error::SetupError::new("projection stream info", e))?;
            persist.push(stream.cached_info().config.persist_mode);
        }
        Ok(persist.contains(&Some(PersistenceMode::Async)))
    }

    /// After a reconnect (the server may have restarted and lost a projection's unflushed
    /// tail): [`Engine::repair`], before the next command is served.
    pub async fn repair_if_reconnected(&mut self) -> Result<(), EngineError> {
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        if connects == self.connects_repaired {
            return Ok(());
        }
        info!(
            connects,
            "reconnected: repairing the projections before serving"
        );
        self.repair().await?;
        self.connects_repaired = connects;
        Ok(())
    }

    /// True when EXECUTIONS holds every report of `entry` and the order store every record
    /// (or a later state of it).
    async fn projected(&self, entry: &JournalEntry) -> Result<bool, EngineError> {
        for jr in &entry.reports {
            let Some(report) = &jr.report else { continue };
            let stored = self.reports.last_stored(&jr.subject).await?;
            if stored.is_none_or(|s| s.seq < report.seq) {
                return Ok(false);
            }
        }
        for jr in &entry.records {
            let Some(record) = &jr.record else { continue };
            match self.store.load(&jr.key).await? {
                Some((kept, _)) if at_least(&kept, record) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Writes `entry`'s projection again: the reports EXECUTIONS lacks, every record.
    async fn reproject(&mut self, entry: &JournalEntry) -> Result<(usize, usize), EngineError> {
        let mut missing = Vec::new();
        for jr in &entry.reports {
            let Some(report) = &jr.report else { continue };
            let stored = self.reports.last_stored(&jr.subject).await?;
            if stored.is_some_and(|s| s.seq >= report.seq) {
                continue;
            }
            if !report.orig_client_order_id.is_empty() {
                // A replaced order's reports stay on its original id's subject.
                if let Some(original) = jr.subject.rsplit('.').next() {
                    self.reports
                        .originals
                        .note(&report.engine_order_id, original);
                }
            }
            missing.push((
                report,
                Trace::journaled(&jr.correlation_id, &jr.traceparent),
            ));
        }
        let tagged: Vec<Tagged<'_>> = missing.iter().map(|(r, t)| (*r, t)).collect();
        let reports = tagged.len();
        self.reports.publish(vec![tagged]).await?;
        let records = entry
            .records
            .iter()
            .filter_map(|jr| jr.record.as_ref().map(|r| (jr.key.as_str(), r)));
        self.store.write_records(records).await?;
        Ok((reports, entry.records.len()))
    }
}

/// True when `kept` (the order store's) is `journaled` or a later state of the same order.
fn at_least(kept: &OrderRecord, journaled: &OrderRecord) -> bool {
    let seq = |r: &OrderRecord| r.last_report.as_ref().map_or(0, |l| l.seq);
    kept == journaled
        || (kept.engine_order_id == journaled.engine_order_id && seq(kept) > seq(journaled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1 as pb;

    fn record(id: &str, report_seq: Option<u32>, status: i32) -> OrderRecord {
        OrderRecord {
            engine_order_id: id.into(),
            status,
            last_report: report_seq.map(|seq| pb::ExecutionReport {
                seq,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The same state, or a later report of the same order, is complete; an earlier state,
    /// another order's record or a lost write is not.
    #[test]
    fn a_record_is_projected_by_itself_or_a_later_state() {
        let journaled = record("e-1", Some(2), 2);
        assert!(at_least(&journaled.clone(), &journaled));
        assert!(at_least(&record("e-1", Some(3), 3), &journaled));
        assert!(!at_least(&record("e-1", Some(1), 1), &journaled));
        assert!(!at_least(&record("e-1", Some(2), 1), &journaled));
        assert!(!at_least(&record("e-2", Some(9), 2), &journaled));
        assert!(!at_least(&record("e-1", None, 1), &record("e-1", None, 8)));
    }
}
