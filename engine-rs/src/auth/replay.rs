//! The replay cache (pure; the clock is passed in): signatures seen within the signature
//! window. A signature is only acceptable while its `signed_at` is within the window, so it
//! needs remembering for a window after it was first seen; every entry expires then. The
//! cache is bounded by entries too ([`ReplayCache::capacity`]): past it the oldest entry is
//! dropped early (and counted), so memory stays bounded whatever the order rate.
//!
//! A queued order's redelivery by JetStream carries the same signature under the same stream
//! sequence: that is the same message again, not a replay.

use std::collections::{HashMap, VecDeque};

/// An Ed25519 signature.
pub type SignatureBytes = [u8; 64];

/// Where a signature was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When (the cache's clock, Unix ns).
    pub at_ns: i64,
    /// The JetStream stream sequence of the queued message that carried it (None: a request).
    pub stream_seq: Option<u64>,
}

/// Signatures seen within the window.
#[derive(Debug)]
pub struct ReplayCache {
    window_ns: i64,
    capacity: usize,
    seen: HashMap<SignatureBytes, Seen>,
    /// Insertion order, for expiry and eviction: (expires at, signature).
    order: VecDeque<(i64, SignatureBytes)>,
    /// Entries dropped before their expiry because the cache was full.
    pub evicted: u64,
}

impl ReplayCache {
    /// The default bound on entries: about 100 MB at most, ~33k orders/s over a 30 s window.
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    pub fn new(window_ns: i64, capacity: usize) -> ReplayCache {
        ReplayCache {
            window_ns,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// A new window length (entries already in keep their expiry).
    pub fn set_window(&mut self, window_ns: i64) {
        self.window_ns = window_ns;
    }

    /// Records `signature` seen at `now_ns` in `stream_seq` (None: a request). Returns where it
    /// was seen before if this is a replay: seen within the window, and not a redelivery of
    /// the same stream sequence.
    pub fn check(
        &mut self,
        signature: &SignatureBytes,
        stream_seq: Option<u64>,
        now_ns: i64,
    ) -> Option<Seen> {
        self.expire(now_ns);
        if let Some(first) = self.seen.get(signature) {
            let redelivery = stream_seq.is_some() && first.stream_seq == stream_seq;
            return (!redelivery).then_some(*first);
        }
        while self.seen.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.seen.remove(&old);
                    self.evicted += 1;
                }
                None => break,
            }
        }
        self.seen.insert(
            *signature,
            Seen {
                at_ns: now_ns,
                stream_seq,
            },
        );
        self.order
            .push_back((now_ns.saturating_add(self.window_ns), *signature));
        None
    }

    /// Drops every entry whose window has passed by `now_ns`.
    fn expire(&mut self, now_ns: i64) {
        while let Some((expires, sig)) = self.order.front() {
            if *expires > now_ns {
                break;
            }
            self.seen.remove(sig);
            self.order.pop_front();
        }
    }
}
