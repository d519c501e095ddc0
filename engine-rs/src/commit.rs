//! Committing a group: what one command did (the records `kv.create` wrote since the last
//! entry, the records it changed, and its execution reports, in order) is written as ONE
//! journal entry (`journal.rs`: one fsynced JetStream write), and only then projected: the
//! reports published to EXECUTIONS and the records written to the order store (both without a
//! per-message fsync on new deployments). A command answers (sync ack, cancel reply, ORDERS
//! ack) after the entry is stored: [`Engine::journal_group`], answer, [`Engine::project`];
//! [`Engine::commit`] is both when the answer may follow the projection.
//!
//! Durable before visible: a report reaches a subscriber only once its entry is stored, so no
//! crash takes back a fill anyone saw. A crash between the entry and its projection delays the
//! reports and records until the journal is repaired (`repair.rs`), never loses them.

use std::collections::HashMap;
use std::time::Instant;

use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::journal::MAX_ENTRY_BYTES;
use crate::metrics::Stage;
use crate::proto::state::{JournalRecord, JournalReport, OrderRecord};
use crate::publish::Tagged;
use crate::venue::LiveOrder;

mod split;

impl Engine {
    /// [`Engine::journal_group`], then [`Engine::project`].
    pub(crate) async fn commit(
        &mut self,
        groups: Vec<Vec<Tagged<'_>>>,
        writes: Vec<&LiveOrder>,
    ) -> Result<(), EngineError> {
        self.journal_group(&groups, &writes).await?;
        self.project(groups, writes).await
    }

    /// Writes the group's journal entry (several if it exceeds [`MAX_ENTRY_BYTES`]: see
    /// [`split::split`]; an execution's reports are split only if they alone exceed it): every
    /// report, then every record created since the last entry (its latest state when `writes`
    /// changed it too), then `writes`. The entries of one group share `group_prev_seq`; the
    /// group counts as written once its last entry is stored. Nothing to write: no entry.
    pub(crate) async fn journal_group(
        &mut self,
        groups: &[Vec<Tagged<'_>>],
        writes: &[&LiveOrder],
    ) -> Result<(), EngineError> {
        let records = latest_records(self.store.take_created(), writes);
        if records.is_empty() && groups.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let started = Instant::now();
        let executions: Vec<Vec<JournalReport>> = groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|(r, trace)| JournalReport {
                        subject: self.reports.originals.subject(r),
                        correlation_id: trace.correlation_id.clone(),
                        traceparent: trace.traceparent.clone(),
                        report: Some((*r).clone()),
                    })
                    .collect()
            })
            .collect();
        let group_prev_seq = self.journal.last_seq();
        for mut entry in split::split(executions, records, MAX_ENTRY_BYTES) {
            entry.group_prev_seq = group_prev_seq;
            entry.written_at_unix_ns = now_ns();
            let more = entry.parts_after > 0;
            self.journal.append(entry).await?;
            if more {
                // Part of the group stored, not all: nothing of it may count yet.
                self.failpoint.reached("mid_journal").await;
            }
        }
        self.metrics.stage(Stage::Journal, started.elapsed());
        self.failpoint.reached("after_journal").await;
        Ok(())
    }

    /// Projects a journaled group: its reports published to EXECUTIONS and its records written
    /// to the order store, concurrently.
    pub(crate) async fn project(
        &mut self,
        groups: Vec<Vec<Tagged<'_>>>,
        writes: Vec<&LiveOrder>,
    ) -> Result<(), EngineError> {
        let started = Instant::now();
        let records = writes.iter().map(|o| (o.key.as_str(), &o.record));
        let (published, written) = tokio::join!(
            self.reports.publish(groups),
            self.store.write_records(records)
        );
        published?;
        written?;
        self.metrics.stage(Stage::Publish, started.elapsed());
        Ok(())
    }

    /// Journals the records created since the last entry, if any (a command that created a
    /// record, e.g. a status query's tombstone, answers after this).
    pub(crate) async fn commit_created(&mut self) -> Result<(), EngineError> {
        self.journal_group(&[], &[]).await
    }
}

/// The last state of each order among `orders` (in order of first appearance): a maker two
/// takers of one group traded with is written once, as the second left it.
pub(crate) fn latest_writes<'a>(orders: impl Iterator<Item = &'a LiveOrder>) -> Vec<&'a LiveOrder> {
    let mut writes: Vec<&LiveOrder> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for o in orders {
        match at.get(o.key.as_str()) {
            Some(&i) => writes[i] = o,
            None => {
                at.insert(o.key.as_str(), writes.len());
                writes.push(o);
            }
        }
    }
    writes
}

/// The created records, each replaced by its state in `writes` when both name it, then the
/// other writes; one per key, in first-seen order.
fn latest_records(
    created: Vec<(String, OrderRecord)>,
    writes: &[&LiveOrder],
) -> Vec<JournalRecord> {
    let mut out: Vec<JournalRecord> = Vec::with_capacity(created.len() + writes.len());
    let mut at: HashMap<String, usize> = HashMap::with_capacity(out.capacity());
    let mut put = |key: &str, record: &OrderRecord| match at.get(key) {
        Some(&i) => out[i].record = Some(record.clone()),
        None => {
            at.insert(key.to_string(), out.len());
            out.push(JournalRecord {
                key: key.to_string(),
                record: Some(record.clone()),
            });
        }
    };
    for (key, record) in &created {
        put(key, record);
    }
    for o in writes {
        put(&o.key, &o.record);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> OrderRecord {
        OrderRecord {
            seq,
            ..Default::default()
        }
    }

    /// A created record is journaled with its latest state; one record per key, in order.
    #[test]
    fn records_are_latest_per_key_in_first_seen_order() {
        let written = LiveOrder::from_record("a.1".into(), record(9));
        let other = LiveOrder::from_record("b.2".into(), record(5));
        let created = vec![
            ("a.1".to_string(), record(1)),
            ("c.3".to_string(), record(3)),
        ];
        let got = latest_records(created, &[&written, &other]);
        let keys: Vec<_> = got
            .iter()
            .map(|r| (r.key.as_str(), r.record.as_ref().map(|r| r.seq)))
            .collect();
        assert_eq!(keys, [("a.1", Some(9)), ("c.3", Some(3)), ("b.2", Some(5))]);
    }
}
