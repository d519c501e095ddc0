//! The figures only JetStream knows, read every `metrics_refresh_ms`: ORDERS and EXECUTIONS
//! (messages, bytes and their limits) and the ORDERS/engine consumer (pending, ack pending).
//! A failed read (disconnected, a leader election) leaves the last values and is logged at
//! DEBUG; the next tick tries again.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::task::JoinHandle;
use tracing::debug;

use super::{Metrics, STREAMS};
use crate::contract;

/// The refresh task; aborted when dropped (or by [`Refresher::stop`]).
pub struct Refresher(JoinHandle<()>);

impl Refresher {
    /// Starts reading every `every` (the first read at once).
    pub fn start(js: jetstream::Context, metrics: Arc<Metrics>, every: Duration) -> Refresher {
        Refresher(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = refresh(&js, &metrics).await {
                    debug!(error = %e, "metrics refresh: JetStream figures not read");
                }
            }
        }))
    }

    /// Stops the task.
    pub fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One read of every stream's and the consumer's figures.
async fn refresh(js: &jetstream::Context, metrics: &Metrics) -> Result<(), async_nats::Error> {
    let g = &metrics.streams;
    for name in STREAMS {
        // get_stream reads the stream's info (one request).
        let stream = js.get_stream(name).await?;
        let info = stream.cached_info();
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        g.messages
            .with_label_values(&[name])
            .set(clamp(info.state.messages));
        g.bytes
            .with_label_values(&[name])
            .set(clamp(info.state.bytes));
        g.max_messages
            .with_label_values(&[name])
            .set(info.config.max_messages);
        g.max_bytes
            .with_label_values(&[name])
            .set(info.config.max_bytes);
        if name == contract::ORDERS_STREAM {
            let consumer = stream.consumer_info(contract::ENGINE_CONSUMER).await?;
            metrics
                .consumer_pending
                .set(i64::try_from(consumer.num_pending).unwrap_or(i64::MAX));
            metrics
                .consumer_ack_pending
                .set(i64::try_from(consumer.num_ack_pending).unwrap_or(i64::MAX));
        }
    }
    Ok(())
}
