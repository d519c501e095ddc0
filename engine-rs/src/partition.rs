//! The symbol -> partition function of the contract (`PARTITIONS` in contract.toml), pure.
//!
//! A symbol's partition is FNV-1a 32-bit over its UTF-8 bytes, modulo [`PARTITIONS`]: the
//! function nats-server's subject mapping `{{partition(8,1)}}` applies to a one-token subject
//! (nats-io/nats-server, server/subject_transform.go, `getHashPartition`: `fnv.New32a()` over
//! the token, then `h.Sum32() % uint32(numBuckets)`), so a server mapping and the engines agree
//! on where a symbol goes. `bridge/partition.py` is the client's copy; both are held to
//! `schemas/testdata/partitions.json`. The `fnv` crate in the lock file is 64-bit only, hence
//! the few lines here.

use crate::contract::{partition_engine_id, PARTITIONS};

const FNV1A_32_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV1A_32_PRIME: u32 = 0x0100_0193;

// The modulus as the hash's type: PARTITIONS is generated as a usize.
const _: () = assert!(PARTITIONS > 0 && PARTITIONS <= u32::MAX as usize);
#[allow(clippy::cast_possible_truncation)] // checked just above
pub const PARTITIONS_U32: u32 = PARTITIONS as u32;

/// FNV-1a 32-bit of `bytes`: per byte, xor it in, then multiply by the prime (wrapping).
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV1A_32_OFFSET_BASIS, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV1A_32_PRIME)
    })
}

/// The partition (`0..PARTITIONS`) that owns `symbol`.
pub fn partition_of(symbol: &str) -> u32 {
    fnv1a_32(symbol.as_bytes()) % PARTITIONS_U32
}

/// The engine id of partition `p` (the contract's `partition_engine_id`), e.g. `p3`: it owns
/// the partition's journal and records.
///
/// # Panics
///
/// If `p` is not in `0..PARTITIONS` (no such partition).
pub fn partition_id(p: u32) -> String {
    assert!(
        p < PARTITIONS_U32,
        "partition {p} is not in 0..{PARTITIONS}"
    );
    partition_engine_id(&p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// `schemas/testdata/partitions.json`, computed with Go's hash/fnv (not by this code) and
    /// checked by tests/unit/test_partition.py too.
    const VECTORS: &str = include_str!("../../schemas/testdata/partitions.json");

    #[derive(Deserialize)]
    struct Vectors {
        partitions: usize,
        published_fnv1a_32: Vec<Published>,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Published {
        input: String,
        fnv1a_32: String,
    }

    #[derive(Deserialize)]
    struct Case {
        symbol: String,
        fnv1a_32: String,
        partition: u32,
        partition_id: String,
        single_token: bool,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(VECTORS).expect("partition vectors parse")
    }

    fn hex(text: &str) -> u32 {
        let digits = text.strip_prefix("0x").expect("hex with 0x");
        u32::from_str_radix(digits, 16).expect("a 32-bit hex value")
    }

    #[test]
    fn partition_vectors_are_there_and_cover_every_partition() {
        let v = vectors();
        assert_eq!(v.partitions, PARTITIONS);
        assert!(v.cases.len() >= 20);
        let mut seen: Vec<u32> = v.cases.iter().map(|c| c.partition).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..PARTITIONS_U32).collect::<Vec<_>>());
    }

    #[test]
    fn partition_hash_matches_the_published_fnv1a_32_values() {
        let v = vectors();
        assert!(!v.published_fnv1a_32.is_empty());
        for p in &v.published_fnv1a_32 {
            assert_eq!(
                fnv1a_32(p.input.as_bytes()),
                hex(&p.fnv1a_32),
                "{:?}",
                p.input
            );
        }
    }

    #[test]
    fn partition_of_every_vector() {
        for c in &vectors().cases {
            assert_eq!(
                fnv1a_32(c.symbol.as_bytes()),
                hex(&c.fnv1a_32),
                "{}",
                c.symbol
            );
            assert_eq!(partition_of(&c.symbol), c.partition, "{}", c.symbol);
            assert_eq!(partition_id(c.partition), c.partition_id, "{}", c.symbol);
            assert_eq!(c.single_token, !c.symbol.contains('.'), "{}", c.symbol);
        }
    }

    #[test]
    fn partition_ids_and_lease_keys() {
        let ids: Vec<String> = (0..PARTITIONS_U32).map(partition_id).collect();
        assert_eq!(ids, ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"]);
        let key = crate::contract::lease_partition_key(&partition_of("AAPL").to_string());
        assert_eq!(key, "partition.3");
    }

    #[test]
    #[should_panic(expected = "partition 8 is not in 0..8")]
    fn partition_out_of_range_has_no_id() {
        let _ = partition_id(PARTITIONS_U32);
    }
}
