//! Publishing market data (core NATS, fire and forget) without ever holding up the order
//! path: the main loop hands each message to a bounded queue ([`MD_QUEUE`]) with `try_send`
//! and moves on; a task of its own publishes them in order. A full queue, or a publish that
//! fails, drops the message and counts it (`bridge_engine_md_dropped_total`): the sequence
//! has advanced anyway, so a subscriber sees the gap and takes a new snapshot.

use std::sync::Arc;

use async_nats::Client;
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::contract;
use crate::marketdata::Flushed;
use crate::metrics::Metrics;

/// Market data messages waiting to be published, at most (then new ones are dropped).
pub const MD_QUEUE: usize = 16_384;

/// The queue and the task that publishes it.
pub struct MdPublisher {
    tx: mpsc::Sender<(String, Bytes)>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl MdPublisher {
    pub fn start(client: Client, metrics: Arc<Metrics>) -> MdPublisher {
        let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(MD_QUEUE);
        let m = metrics.clone();
        let task = tokio::spawn(async move {
            let mut warned = false;
            while let Some((subject, payload)) = rx.recv().await {
                if let Err(e) = client.publish(subject, payload).await {
                    m.market.dropped.inc();
                    if !warned {
                        warn!(error = %e, "market data publish failed: dropped (subscribers resync on the gap)");
                        warned = true;
                    }
                }
            }
        });
        MdPublisher { tx, task, metrics }
    }

    fn send(&self, subject: String, payload: Vec<u8>) {
        if self.tx.try_send((subject, Bytes::from(payload))).is_err() {
            self.metrics.market.dropped.inc();
        }
    }

    /// One flush: per symbol its update, its quote if the top changed, then each trade.
    pub fn publish(&self, flushed: Vec<Flushed>) {
        for f in flushed {
            self.metrics.market.updates.inc();
            self.metrics
                .market
                .events
                .inc_by(u64::from(f.update.events));
            self.send(contract::md_update(&f.symbol), f.update.encode_to_vec());
            if let Some(q) = f.quote {
                self.send(contract::md_quote(&f.symbol), q.encode_to_vec());
            }
            for t in &f.update.trades {
                self.send(contract::md_trade(&f.symbol), t.encode_to_vec());
            }
        }
    }

    /// Stops the task once what is queued is handed to the client (later sends are
    /// dropped and counted).
    pub async fn close(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        let _ = (&mut self.task).await;
    }
}
