//! Label values of the engine's metrics (pure), as `schemas/metrics.toml` lists them: the
//! order's path, outcome and stage, and the protobuf enums' names (`bridge.v1.RejectReason`,
//! `bridge.v1.ExecType`) without their prefix, lower case (`REJECT_REASON_UNKNOWN_SYMBOL` ->
//! `unknown_symbol`).

use crate::proto::v1::{self as pb, AckStatus, ExecType, RejectReason};

/// How an order came in (`path` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Sync,
    Queued,
}

impl Path {
    pub const ALL: [Path; 2] = [Path::Sync, Path::Queued];

    pub fn label(self) -> &'static str {
        match self {
            Path::Sync => "sync",
            Path::Queued => "queued",
        }
    }
}

/// What the engine did with an order it decoded (`outcome` label, `engine_outcome` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected,
    /// A retry of an order the engine already has, answered from the order store.
    Duplicate,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Accepted, Outcome::Rejected, Outcome::Duplicate];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::Duplicate => "duplicate",
        }
    }

    /// The outcome an ack answers.
    pub fn of(ack: &pb::OrderAck) -> Outcome {
        if ack.duplicate {
            Outcome::Duplicate
        } else if ack.status == AckStatus::Accepted as i32 {
            Outcome::Accepted
        } else {
            Outcome::Rejected
        }
    }
}

/// Where an order spends its time in the engine (`stage` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Protobuf decoding (and the authorization checks that precede it).
    Decode,
    /// Field, size, symbol, risk and deadline checks: the record to store.
    Validate,
    /// The order's record created in the order store (`kv.create`: the per-order dedupe).
    Dedupe,
    /// The durable write that precedes the ack: the commit group's journal entry (JOURNAL).
    Journal,
    /// Matching in the venue.
    Match,
    /// Publishing the order's execution reports and records (the projections: EXECUTIONS and
    /// the order store), after the journal entry.
    Publish,
    /// Sending the reply (sync) or the JetStream ack (queued).
    Ack,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Decode,
        Stage::Validate,
        Stage::Dedupe,
        Stage::Journal,
        Stage::Match,
        Stage::Publish,
        Stage::Ack,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Dedupe => "dedupe",
            Stage::Journal => "journal",
            Stage::Match => "match",
            Stage::Publish => "publish",
            Stage::Ack => "ack",
        }
    }
}

pub const REJECT_REASON_PREFIX: &str = "REJECT_REASON_";
pub const EXEC_TYPE_PREFIX: &str = "EXEC_TYPE_";

/// `side` label values of the book depth.
pub const SIDES: [&str; 2] = ["buy", "sell"];

/// A protobuf enum value's name without `prefix`, lower case.
pub fn enum_label(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// Every `reason` label value, in enum order.
pub fn reject_reasons() -> Vec<String> {
    (0..)
        .map_while(|i| RejectReason::try_from(i).ok())
        .map(|r| enum_label(r.as_str_name(), REJECT_REASON_PREFIX))
        .collect()
}

/// Every `exec_type` label value; index = the enum's number.
pub fn exec_types() -> Vec<String> {
    (0..)
        .map_while(|i| ExecType::try_from(i).ok())
        .map(|t| enum_label(t.as_str_name(), EXEC_TYPE_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_the_prefix_in_lower_case() {
        assert_eq!(
            enum_label("REJECT_REASON_UNKNOWN_SYMBOL", REJECT_REASON_PREFIX),
            "unknown_symbol"
        );
        let reasons = reject_reasons();
        assert_eq!(reasons[0], "unspecified");
        assert!(reasons.contains(&"not_entitled".to_string()));
        assert_eq!(
            exec_types(),
            [
                "unspecified",
                "new",
                "trade",
                "canceled",
                "rejected",
                "expired",
                "pending_replace",
                "replaced"
            ]
        );
    }
}
