//! Consumer binding: the durable ORDERS pull consumer `engine`, bound at start-up, re-bound
//! (re-created from its committed definition if it vanished) when a pull fails or stalls.

use std::time::Duration;

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

/// The messages of one pull: of the shared consumer, and (partitioned) of the partition's
/// own, merged.
pub type Pull = futures::stream::BoxStream<'static, Result<jetstream::Message, async_nats::Error>>;

/// What an engine instance pulls: the shared ORDERS consumer `engine` and, when it serves a
/// partition, that partition's consumer (`engine-p<n>`).
pub struct Pulls {
    shared: PullConsumer,
    own: Option<(u32, PullConsumer)>,
}

impl Pulls {
    pub async fn bind(
        js: &jetstream::Context,
        shared: PullConsumer,
        partition: Option<u32>,
    ) -> Result<Pulls, SetupError> {
        let own = match partition {
            Some(p) => Some((p, bind_partition(js, p).await?)),
            None => None,
        };
        Ok(Pulls { shared, own })
    }

    /// One pull request of each consumer (at most `max` messages each, ending after
    /// `expires`), their messages merged.
    pub async fn pull(&self, max: usize, expires: Duration) -> Result<Pull, async_nats::Error> {
        use futures::StreamExt;
        let shared = self
            .shared
            .batch()
            .max_messages(max)
            .expires(expires)
            .messages()
            .await?;
        match &self.own {
            None => Ok(shared.boxed()),
            Some((_, own)) => {
                let own = own
                    .batch()
                    .max_messages(max)
                    .expires(expires)
                    .messages()
                    .await?;
                Ok(futures::stream::select(shared, own).boxed())
            }
        }
    }

    /// Re-binds every consumer ([`rebind`], [`rebind_partition`]).
    pub async fn rebind(
        &mut self,
        js: &jetstream::Context,
        cfg: &Config,
    ) -> Result<(), SetupError> {
        self.shared = rebind(js, cfg).await?;
        if let Some((p, own)) = self.own.as_mut() {
            *own = rebind_partition(js, cfg, *p).await?;
        }
        Ok(())
    }
}

/// The durable name of partition `p`'s consumer: `engine-p<n>`.
pub fn partition_consumer(p: u32) -> String {
    format!(
        "{}-{}",
        contract::ENGINE_CONSUMER,
        crate::partition::partition_id(p)
    )
}

/// Binds (creating it if missing) the consumer of partition `p`'s queued orders
/// ([`contract::queue_partition`]): the engine's consumer definition, filtered to that
/// partition, so each partition drains on its own.
pub async fn bind_partition(js: &jetstream::Context, p: u32) -> Result<PullConsumer, SetupError> {
    let name = partition_consumer(p);
    let setup = |e: async_nats::Error| SetupError::new("partition consumer", e);
    let mut config: jetstream::consumer::pull::Config =
        serde_json::from_str(CONSUMER_DEFINITION).map_err(|e| setup(e.into()))?;
    config.durable_name = Some(name.clone());
    config.description = Some(format!(
        "Engine pull consumer of partition {p}'s queued orders"
    ));
    config.filter_subjects = vec![contract::queue_partition(&p.to_string(), "*")];
    let stream = js
        .get_stream(contract::ORDERS_STREAM)
        .await
        .map_err(|e| setup(e.into()))?;
    stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| setup(e.into()))
}

/// [`bind_partition`], retried with the engine's backoff.
pub async fn rebind_partition(
    js: &jetstream::Context,
    cfg: &Config,
    p: u32,
) -> Result<PullConsumer, SetupError> {
    (|| bind_partition(js, p))
        .retry(retry::Backoff::from_config(cfg))
        .notify(|e, delay| retrying("bind consumer", &partition_consumer(p), e, delay))
        .await
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
