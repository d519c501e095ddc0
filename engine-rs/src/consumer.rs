//! Consumer binding: the durable ORDERS pull consumer `engine`, bound at start-up, re-bound
//! (re-created from its committed definition if it vanished) when a pull fails or stalls.

use async_nats::jetstream::{self, consumer::PullConsumer};
use backon::Retryable;
use tracing::error;

use crate::config::Config;
use crate::contract;
use crate::error::SetupError;
use crate::jetstream_errors::retrying;
use crate::retry;

/// The committed definition of the engine's durable consumer (provisioning applies the same
/// file); used to re-create the consumer if it has disappeared.
pub const CONSUMER_DEFINITION: &str =
    include_str!("../../bridge/jetstream/orders-engine.consumer.json");

/// Binds to the durable ORDERS consumer. If it is missing (deleted, or lost with a stream
/// leader) it is re-created from its committed definition, which the engine role may do.
pub async fn bind(js: &jetstream::Context) -> Result<PullConsumer, SetupError> {
    let setup = |e: async_nats::Error| SetupError::new("consumer ORDERS/engine", e);
    match js
        .get_consumer_from_stream(contract::ENGINE_CONSUMER, contract::ORDERS_STREAM)
        .await
    {
        Ok(c) => Ok(c),
        Err(e)
            if matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            let config: jetstream::consumer::pull::Config =
                serde_json::from_str(CONSUMER_DEFINITION).map_err(|e| setup(e.into()))?;
            error!(
                "consumer ORDERS/engine is missing: re-creating it from its committed definition"
            );
            let stream = js
                .get_stream(contract::ORDERS_STREAM)
                .await
                .map_err(|e| setup(e.into()))?;
            stream
                .get_or_create_consumer(contract::ENGINE_CONSUMER, config)
                .await
                .map_err(|e| setup(e.into()))
        }
        Err(e) => Err(setup(e.into())),
    }
}

/// [`bind`], retried with the engine's backoff (the server may be restarting or electing a
/// leader).
pub async fn rebind(js: &jetstream::Context, cfg: &Config) -> Result<PullConsumer, SetupError> {
    (|| bind(js))
        .retry(retry::Backoff::from_config(cfg))
        .notify(|e, delay| retrying("bind consumer", contract::ENGINE_CONSUMER, e, delay))
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The embedded consumer definition (the committed JSON provisioning applies) parses into
    /// the consumer async-nats would create, with its limits intact.
    #[test]
    fn consumer_definition_parses() {
        let c: jetstream::consumer::pull::Config =
            serde_json::from_str(CONSUMER_DEFINITION).expect("definition parses");
        assert_eq!(c.durable_name.as_deref(), Some(contract::ENGINE_CONSUMER));
        assert_eq!(c.ack_policy, jetstream::consumer::AckPolicy::Explicit);
        assert_eq!(c.ack_wait, Duration::from_secs(30));
        assert_eq!(c.max_ack_pending, 1024);
        assert_eq!(c.filter_subject, "");
        assert_eq!(
            c.filter_subjects,
            [contract::QUEUE_ALL, contract::QUEUE_BATCH_ALL],
            "single queued orders and batches (contract 1.2)"
        );
    }
}
