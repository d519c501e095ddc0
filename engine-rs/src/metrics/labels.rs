//! Label values of the engine's metrics that come from the protobuf enums (pure):
//! `bridge.v1.RejectReason` and `bridge.v1.ExecType` names without their prefix, lower case
//! (`REJECT_REASON_UNKNOWN_SYMBOL` -> `unknown_symbol`), as `schemas/metrics.toml` says.

use crate::proto::v1::{ExecType, RejectReason};

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
                "expired"
            ]
        );
    }
}
