//! Every NATS subject, stream, consumer and bucket name, built by functions.
//! Mirrors `bridge/subjects.py`; nothing else builds subject strings.

pub const SUBMIT: &str = "bridge.v1.orders.submit";
pub const CANCEL: &str = "bridge.v1.orders.cancel";
pub const STATUS: &str = "bridge.v1.orders.status";
pub const QUEUE_PREFIX: &str = "bridge.v1.orders.queue.";
pub const ORDERS_STREAM: &str = "ORDERS";
pub const EXECUTIONS_STREAM: &str = "EXECUTIONS";
pub const ENGINE_CONSUMER: &str = "engine";
pub const ORDERS_KV_BUCKET: &str = "bridge_orders";
/// Engine leases (see `lease.rs`); the lease TTL is this bucket's max_age.
pub const LEASES_KV_BUCKET: &str = "bridge_leases";
/// Lease key of the intake every engine shares: the submit queue group and the ORDERS consumer.
pub const LEASE_INTAKE_KEY: &str = "intake";
/// Queue group shared by every engine for the request-reply subjects.
pub const ENGINE_QUEUE_GROUP: &str = "bridge-engine";

pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
pub const HEADER_CORRELATION_ID: &str = "Bridge-Correlation-Id";
/// Atomic batch publish (ADR-50): every report of one execution is committed together.
pub const HEADER_BATCH_ID: &str = "Nats-Batch-Id";
pub const HEADER_BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
pub const HEADER_BATCH_COMMIT: &str = "Nats-Batch-Commit";
/// Full protobuf name of the payload (e.g. `bridge.v1.NewOrder`); informational for operators.
pub const HEADER_SCHEMA: &str = "Bridge-Schema";

/// Subject of execution reports for one order (captured by the EXECUTIONS stream).
pub fn executions(account: &str, client_order_id: &str) -> String {
    format!("bridge.v1.exec.{account}.{client_order_id}")
}

/// Account token of a queued order's subject, if the subject is one.
pub fn account_of_queue_subject(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(QUEUE_PREFIX)
        .filter(|a| !a.is_empty() && !a.contains('.'))
}

/// Subject where engine `engine_id` takes cancels forwarded by its peers.
pub fn engine_cancel(engine_id: &str) -> String {
    format!("bridge.v1.engine.{engine_id}.cancel")
}

/// Lease key of one symbol in the leases bucket.
pub fn lease_symbol_key(symbol: &str) -> String {
    format!("symbol.{symbol}")
}

/// KV key of an order record.
pub fn order_key(account: &str, client_order_id: &str) -> String {
    format!("{account}.{client_order_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account is recovered from a queued order's subject, and nothing else parses as one.
    #[test]
    fn account_from_queue_subject() {
        assert_eq!(
            account_of_queue_subject("bridge.v1.orders.queue.ACC1"),
            Some("ACC1")
        );
        assert_eq!(account_of_queue_subject("bridge.v1.orders.queue."), None);
        assert_eq!(account_of_queue_subject("bridge.v1.orders.queue.a.b"), None);
        assert_eq!(account_of_queue_subject("bridge.v1.orders.submit"), None);
    }
}
