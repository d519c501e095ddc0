//! A commit group's journal entries (pure): its executions' reports, then its records, packed
//! in order into entries of at most a given size.
//!
//! An execution's reports stay in one entry whenever they fit in one; an execution larger than
//! an entry (a sweep through thousands of resting orders) is split at report boundaries rather
//! than refused, since an entry the server cannot store would stop the engine, and the order
//! would be executed again, and refused again, at every restart. Splitting is safe because a
//! group is all or nothing: every entry says how many entries of its group follow it
//! (`parts_after`), nothing of the group is answered before its last entry is stored, and
//! repair skips the entries of a group whose last entry is missing (`repair/walk.rs`).

use prost::Message as _;

use crate::proto::state::{JournalEntry, JournalRecord, JournalReport};

/// Bytes an entry spends per report besides the report (tag, length).
const REPORT_OVERHEAD: usize = 16;
/// Bytes an entry spends per record besides the record (tag, length, key).
const RECORD_OVERHEAD: usize = 256;

/// Fills entries in order, opening a new one when an item does not fit the current one.
struct Packer {
    entries: Vec<JournalEntry>,
    /// Bytes of the current (last) entry.
    size: usize,
    limit: usize,
}

impl Packer {
    /// True when `bytes` more fit the current entry (an empty entry takes anything).
    fn fits(&self, bytes: usize) -> bool {
        self.size == 0 || self.size + bytes <= self.limit
    }

    fn open(&mut self) {
        self.entries.push(JournalEntry::default());
        self.size = 0;
    }

    /// The entry `bytes` more go into: the current one, or a new one if they do not fit.
    fn room(&mut self, bytes: usize) -> &mut JournalEntry {
        if self.entries.is_empty() || !self.fits(bytes) {
            self.open();
        }
        self.size += bytes;
        let last = self.entries.len() - 1;
        &mut self.entries[last]
    }

    fn put_report(&mut self, report: JournalReport) {
        let bytes = report.encoded_len() + REPORT_OVERHEAD;
        self.room(bytes).reports.push(report);
    }

    fn put_record(&mut self, record: JournalRecord) {
        let bytes = record.encoded_len() + RECORD_OVERHEAD;
        self.room(bytes).records.push(record);
    }
}

/// Packs `executions` (each the reports of one execution, or of one order's rejection or
/// expiry, in the order they were made) and then `records` into entries of at most `limit`
/// bytes (by the encoded size of their items, plus a margin per item), in order; sets every
/// entry's `parts_after`. Nothing to write: no entry. An item larger than `limit` alone gets an
/// entry of its own (intake bounds every report and record far below an entry).
pub fn split(
    executions: Vec<Vec<JournalReport>>,
    records: Vec<JournalRecord>,
    limit: usize,
) -> Vec<JournalEntry> {
    let mut packer = Packer {
        entries: Vec::new(),
        size: 0,
        limit,
    };
    for execution in executions.into_iter().filter(|e| !e.is_empty()) {
        let bytes: usize = execution
            .iter()
            .map(|r| r.encoded_len() + REPORT_OVERHEAD)
            .sum();
        // Whole into a new entry when it fits an entry but not what is left of this one.
        if bytes <= limit && !packer.fits(bytes) {
            packer.open();
        }
        for report in execution {
            packer.put_report(report);
        }
    }
    for record in records {
        packer.put_record(record);
    }
    let mut entries = packer.entries;
    let n = entries.len();
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.parts_after = u32::try_from(n - 1 - i).unwrap_or(u32::MAX);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::state::OrderRecord;
    use crate::proto::v1 as pb;

    fn report(order: usize, seq: u32) -> JournalReport {
        JournalReport {
            subject: format!("bridge.v1.exec.ACCT.o{order}"),
            correlation_id: "c".repeat(32),
            report: Some(pb::ExecutionReport {
                exec_id: format!("e-{order}-{seq}"),
                engine_order_id: format!("e-{order}"),
                seq,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// One execution: a taker and `makers` makers, each filled once.
    fn execution(taker: usize, makers: usize) -> Vec<JournalReport> {
        let mut out = vec![report(taker, 1)];
        out.extend((0..makers).map(|m| report(taker, 2 + u32::try_from(m).unwrap())));
        out.extend((0..makers).map(|m| report(taker * 10_000 + m, 2)));
        out
    }

    fn record(key: usize) -> JournalRecord {
        JournalRecord {
            key: format!("ACCT.o{key}"),
            record: Some(OrderRecord {
                seq: key as u64,
                ..Default::default()
            }),
        }
    }

    fn bytes(entry: &JournalEntry) -> usize {
        let reports: usize = entry
            .reports
            .iter()
            .map(|r| r.encoded_len() + REPORT_OVERHEAD)
            .sum();
        let records: usize = entry
            .records
            .iter()
            .map(|r| r.encoded_len() + RECORD_OVERHEAD)
            .sum();
        reports + records
    }

    fn exec_ids(entries: &[JournalEntry]) -> Vec<String> {
        entries
            .iter()
            .flat_map(|e| &e.reports)
            .map(|r| {
                r.report
                    .as_ref()
                    .map(|r| r.exec_id.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Where each execution's reports landed: the entry index of each of its reports.
    fn homes(entries: &[JournalEntry], executions: &[Vec<JournalReport>]) -> Vec<Vec<usize>> {
        let at = |id: &str| {
            entries
                .iter()
                .position(|e| {
                    e.reports
                        .iter()
                        .any(|r| r.report.as_ref().unwrap().exec_id == id)
                })
                .unwrap()
        };
        executions
            .iter()
            .map(|ex| {
                let mut h: Vec<usize> = ex
                    .iter()
                    .map(|r| at(&r.report.as_ref().unwrap().exec_id))
                    .collect();
                h.dedup();
                h
            })
            .collect()
    }

    /// Nothing to write, no entry; a small group is one entry, the last of its group.
    #[test]
    fn a_small_group_is_one_entry() {
        assert!(split(Vec::new(), Vec::new(), 1000).is_empty());
        assert!(split(vec![Vec::new()], Vec::new(), 1000).is_empty());
        let entries = split(vec![execution(1, 2)], vec![record(1)], 100_000);
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].reports.len(), entries[0].records.len()), (5, 1));
        assert_eq!(entries[0].parts_after, 0);
    }

    /// Many executions: every entry within the limit, everything in order exactly once,
    /// no execution split, records after every report; parts_after counts down to 0.
    #[test]
    fn executions_are_packed_whole_in_order_within_the_limit() {
        let executions: Vec<_> = (1..=60).map(|i| execution(i, i % 7)).collect();
        let records: Vec<_> = (1..=60).map(record).collect();
        let limit = 4_000;
        let entries = split(executions.clone(), records.clone(), limit);
        assert!(entries.len() > 3, "{} entries", entries.len());
        for e in &entries {
            assert!(bytes(e) <= limit, "{} > {limit}", bytes(e));
        }
        let want: Vec<String> = executions
            .iter()
            .flatten()
            .map(|r| r.report.as_ref().unwrap().exec_id.clone())
            .collect();
        assert_eq!(exec_ids(&entries), want);
        for h in homes(&entries, &executions) {
            assert_eq!(h.len(), 1, "an execution was split: entries {h:?}");
        }
        let keys: Vec<_> = entries.iter().flat_map(|e| &e.records).cloned().collect();
        assert_eq!(keys, records);
        let first_record = entries.iter().position(|e| !e.records.is_empty()).unwrap();
        assert!(entries[first_record + 1..]
            .iter()
            .all(|e| e.reports.is_empty()));
        let parts: Vec<u32> = entries.iter().map(|e| e.parts_after).collect();
        let n = u32::try_from(entries.len()).unwrap();
        assert_eq!(parts, (0..n).rev().collect::<Vec<_>>());
    }

    /// An execution larger than an entry is split at report boundaries (never refused); the
    /// executions around it stay whole.
    #[test]
    fn an_execution_larger_than_an_entry_is_split_not_refused() {
        let executions = vec![execution(1, 1), execution(2, 200), execution(3, 1)];
        let limit = 5_000;
        let big: usize = executions[1]
            .iter()
            .map(|r| r.encoded_len() + REPORT_OVERHEAD)
            .sum();
        assert!(big > 4 * limit);
        let entries = split(executions.clone(), vec![record(2)], limit);
        for e in &entries {
            assert!(bytes(e) <= limit, "{} > {limit}", bytes(e));
        }
        let h = homes(&entries, &executions);
        assert_eq!(h[0].len(), 1);
        assert!(h[1].len() >= 5, "{h:?}");
        assert_eq!(h[2].len(), 1);
        let want: Vec<String> = executions
            .iter()
            .flatten()
            .map(|r| r.report.as_ref().unwrap().exec_id.clone())
            .collect();
        assert_eq!(exec_ids(&entries), want);
        assert_eq!(entries.last().unwrap().parts_after, 0);
        assert_eq!(
            usize::try_from(entries[0].parts_after).unwrap(),
            entries.len() - 1
        );
    }

    /// An execution that fits an entry but not the current one starts a new entry.
    #[test]
    fn an_execution_that_fits_an_entry_starts_a_fresh_one() {
        let one: usize = execution(1, 10)
            .iter()
            .map(|r| r.encoded_len() + REPORT_OVERHEAD)
            .sum();
        let entries = split(
            vec![execution(1, 10), execution(2, 10)],
            Vec::new(),
            one + 10,
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].reports.len(), 21);
        assert_eq!(entries[1].reports.len(), 21);
    }
}
