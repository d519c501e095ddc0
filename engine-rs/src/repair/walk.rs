//! What a repair does with each journal entry it walks past, newest first (pure).
//!
//! * An entry of a **torn group** is skipped: a commit group larger than one entry is written
//!   as consecutive entries (`commit/split.rs`), each saying how many entries of its group
//!   follow it (`parts_after`) and naming its group (`group_prev_seq`, the `prev_stream_seq`
//!   of the group's first entry). The engine answers nothing of a group before its last entry
//!   is stored, so a group whose last entry is missing (the engine died between two of its
//!   entries) is no fact: none of it is projected, and its orders, created PENDING_NEW and
//!   never answered, are executed again by recovery. Walking newest first, an entry with
//!   entries after it belongs to a complete group only if the entry walked just before it is
//!   the next entry of the same group, itself of a complete group.
//! * An **empty** entry (no record, no report: one the engine never writes, e.g. another
//!   writer's, which fenced it) projects nothing and proves nothing about the entries before
//!   it: the walk goes on past it instead of stopping there.
//! * Every other entry is **checked**: the walk stops at the first one fully projected.

use crate::proto::state::JournalEntry;

/// Where an entry stands in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Entries of its group after it (0: its group's last).
    pub parts_after: u32,
    /// Its group (`group_prev_seq`).
    pub group: u64,
    /// No record and no report.
    pub empty: bool,
}

impl Part {
    pub fn of(entry: &JournalEntry) -> Part {
        Part {
            parts_after: entry.parts_after,
            group: entry.group_prev_seq,
            empty: entry.records.is_empty() && entry.reports.is_empty(),
        }
    }
}

/// What the repair does with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Projected? Stop there; else re-project it.
    Check,
    /// Nothing to project, nothing to stop at: walk on.
    PassOver,
    /// Of a group never completed: not a fact, never projected.
    Torn,
}

/// The walk's memory: the entry it visited last (newer than the next one) and whether that
/// entry's group was complete.
#[derive(Debug, Default)]
pub struct Walk {
    newer: Option<(Part, bool)>,
}

impl Walk {
    /// The step for `part`, the entry before the one visited last.
    pub fn step(&mut self, part: Part) -> Step {
        let complete = part.parts_after == 0
            || matches!(self.newer, Some((n, true))
                if n.group == part.group && n.parts_after + 1 == part.parts_after);
        self.newer = Some((part, complete));
        match (complete, part.empty) {
            (false, _) => Step::Torn,
            (true, true) => Step::PassOver,
            (true, false) => Step::Check,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(parts_after: u32, group: u64) -> Part {
        Part {
            parts_after,
            group,
            empty: false,
        }
    }

    fn walk(newest_first: &[Part]) -> Vec<Step> {
        let mut w = Walk::default();
        newest_first.iter().map(|p| w.step(*p)).collect()
    }

    /// One-entry groups (every entry before this change too) are all checked.
    #[test]
    fn one_entry_groups_are_checked() {
        assert_eq!(walk(&[part(0, 7), part(0, 6)]), [Step::Check, Step::Check]);
        let old = JournalEntry {
            prev_stream_seq: 6,
            reports: vec![Default::default()],
            ..Default::default()
        };
        assert_eq!(walk(&[Part::of(&old)]), [Step::Check]);
    }

    /// A complete three-entry group is checked entry by entry.
    #[test]
    fn a_complete_group_is_checked() {
        let steps = walk(&[part(0, 10), part(1, 10), part(2, 10), part(0, 9)]);
        assert_eq!(steps, [Step::Check; 4]);
    }

    /// A group whose last entry is missing, at the tail or behind later groups, is torn;
    /// the groups around it are not.
    #[test]
    fn a_group_without_its_last_entry_is_torn() {
        // Tail: entries 1 and 2 of a three-entry group, nothing after them.
        assert_eq!(
            walk(&[part(1, 20), part(2, 20), part(0, 19)]),
            [Step::Torn, Step::Torn, Step::Check]
        );
        // Behind a one-entry group written after the restart (its part count would match).
        assert_eq!(
            walk(&[part(0, 31), part(1, 20), part(0, 19)]),
            [Step::Check, Step::Torn, Step::Check]
        );
        // Behind a complete two-entry group written after the restart.
        assert_eq!(
            walk(&[part(0, 31), part(1, 31), part(1, 20), part(2, 20)]),
            [Step::Check, Step::Check, Step::Torn, Step::Torn]
        );
    }

    /// An empty entry (another writer's) is passed over, wherever it is.
    #[test]
    fn an_empty_entry_is_passed_over() {
        let empty = Part {
            parts_after: 0,
            group: 0,
            empty: true,
        };
        assert_eq!(
            walk(&[empty, part(0, 5), empty]),
            [Step::PassOver, Step::Check, Step::PassOver]
        );
    }
}
