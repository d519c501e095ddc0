//! Which partitions one engine takes or gives back, pure: every engine decides for itself
//! from the same view of the lease bucket, and the bucket's atomic create settles races.
//!
//! Fair share: with `n` live engines (sorted by id) and `P` partitions, each engine's share
//! is `P / n`, plus one for the first `P % n`. An engine under its share takes free
//! partitions; an engine over it gives back its excess, highest partitions first, only when
//! no partition is free and some engine is under its share (so nothing is given back that
//! nobody will take).

use std::collections::{BTreeMap, BTreeSet};

/// What one engine sees in the lease bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Live engines (their presence key), this one included.
    pub members: BTreeSet<String>,
    /// Partition → the engine id holding its lease.
    pub owners: BTreeMap<u32, String>,
}

/// One step an engine takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Take(u32),
    Release(u32),
}

/// The share of `me` among `members` (which must contain it) of `partitions`.
pub fn fair_share(members: &BTreeSet<String>, me: &str, partitions: u32) -> u32 {
    let n = u32::try_from(members.len().max(1)).unwrap_or(u32::MAX);
    let rank = members.iter().position(|m| m == me).unwrap_or(0);
    let rank = u32::try_from(rank).unwrap_or(u32::MAX);
    partitions / n + u32::from(rank < partitions % n)
}

/// What `me` does next, given `view` (with `me` among its members).
pub fn decide(view: &View, me: &str, partitions: u32) -> Vec<Action> {
    let mut members = view.members.clone();
    members.insert(me.to_string());
    let share = fair_share(&members, me, partitions);
    let mine: Vec<u32> = view
        .owners
        .iter()
        .filter(|(_, o)| o.as_str() == me)
        .map(|(p, _)| *p)
        .collect();
    let held = u32::try_from(mine.len()).unwrap_or(u32::MAX);
    let free: Vec<u32> = (0..partitions)
        .filter(|p| !view.owners.contains_key(p))
        .collect();
    if held < share {
        // Start at a place that depends on the rank, so engines starting together mostly
        // reach for different partitions.
        let rank = members.iter().position(|m| m == me).unwrap_or(0);
        let start = free
            .len()
            .checked_mul(rank)
            .map_or(0, |x| x / members.len().max(1));
        return free
            .iter()
            .cycle()
            .skip(start)
            .take(usize::try_from(share - held).unwrap_or(0).min(free.len()))
            .map(|p| Action::Take(*p))
            .collect();
    }
    if held > share && free.is_empty() {
        let someone_under = members.iter().any(|m| {
            let theirs = view.owners.values().filter(|o| *o == m).count();
            u32::try_from(theirs).unwrap_or(u32::MAX) < fair_share(&members, m, partitions)
        });
        if someone_under {
            return mine
                .iter()
                .rev()
                .take(usize::try_from(held - share).unwrap_or(0))
                .map(|p| Action::Release(*p))
                .collect();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(members: &[&str], owners: &[(u32, &str)]) -> View {
        View {
            members: members.iter().map(|m| m.to_string()).collect(),
            owners: owners.iter().map(|(p, o)| (*p, o.to_string())).collect(),
        }
    }

    #[test]
    fn shares_add_up_to_every_partition() {
        for n in 1..=9 {
            let members: BTreeSet<String> = (0..n).map(|i| format!("e{i}")).collect();
            let total: u32 = members.iter().map(|m| fair_share(&members, m, 8)).sum();
            assert_eq!(total, 8, "{n} engines");
        }
    }

    #[test]
    fn a_lone_engine_takes_everything() {
        let actions = decide(&view(&["a"], &[]), "a", 8);
        let taken: BTreeSet<u32> = actions
            .iter()
            .map(|a| match a {
                Action::Take(p) => *p,
                Action::Release(_) => panic!("{a:?}"),
            })
            .collect();
        assert_eq!(taken, (0..8).collect());
    }

    #[test]
    fn a_joining_engine_makes_the_busiest_give_back_its_excess() {
        let all: Vec<(u32, &str)> = (0..8).map(|p| (p, "a")).collect();
        let v = view(&["a", "b"], &all);
        assert_eq!(
            decide(&v, "a", 8),
            vec![
                Action::Release(7),
                Action::Release(6),
                Action::Release(5),
                Action::Release(4)
            ]
        );
        assert!(decide(&v, "b", 8).is_empty(), "nothing is free yet");
    }

    #[test]
    fn nothing_is_given_back_while_a_partition_is_free() {
        let owners: Vec<(u32, &str)> = (0..7).map(|p| (p, "a")).collect();
        let v = view(&["a", "b"], &owners);
        assert!(decide(&v, "a", 8).is_empty());
        assert_eq!(decide(&v, "b", 8), vec![Action::Take(7)]);
    }

    #[test]
    fn a_dead_engines_partitions_are_taken_by_the_survivors() {
        // c died: its lease keys expired; a and b each take their share of the free ones.
        let owners = [(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "b")];
        let v = view(&["a", "b"], &owners);
        assert_eq!(decide(&v, "a", 8), vec![Action::Take(6)]);
        assert_eq!(decide(&v, "b", 8), vec![Action::Take(7)]);
    }

    #[test]
    fn a_balanced_view_is_left_alone() {
        let owners = [
            (0, "a"),
            (1, "a"),
            (2, "a"),
            (3, "b"),
            (4, "b"),
            (5, "b"),
            (6, "c"),
            (7, "c"),
        ];
        let v = view(&["a", "b", "c"], &owners);
        for me in ["a", "b", "c"] {
            assert!(decide(&v, me, 8).is_empty(), "{me}");
        }
    }
}
