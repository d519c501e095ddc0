//! Security alerts: every refusal of the authorization checks becomes a `SecurityAlert` on the
//! ALERTS stream (`bridge.v1.alerts.engine.<kind>`), published with a JetStream ack by a task
//! of its own. Raising one never waits and never fails the order path: the alert is queued
//! (bounded; a full queue drops it and says so at ERROR), and a publish that fails is logged
//! at ERROR. Accepted orders never touch this.

use async_nats::jetstream;
use async_nats::Client;
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::auth::violation_token;
use crate::contract;
use crate::proto::v1::{SecurityAlert, SecurityViolationKind};

/// Alerts waiting for their publish, at most.
pub const QUEUE: usize = 1024;

/// The engine's alert source token in alert subjects.
pub const SOURCE: &str = "engine";

/// The subject of an alert of `kind` raised by the engine.
pub fn subject(kind: SecurityViolationKind) -> String {
    contract::alert(SOURCE, &violation_token(kind))
}

/// The queue of alerts and the task that publishes them.
pub struct Alerts {
    tx: Option<mpsc::Sender<SecurityAlert>>,
    task: Option<JoinHandle<()>>,
    /// Alerts dropped because the queue was full.
    pub dropped: u64,
}

impl Alerts {
    /// Starts the publishing task on `client`'s JetStream.
    pub fn start(client: Client) -> Alerts {
        let (tx, mut rx) = mpsc::channel::<SecurityAlert>(QUEUE);
        let js = jetstream::new(client);
        let task = tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                publish(&js, alert).await;
            }
        });
        Alerts {
            tx: Some(tx),
            task: Some(task),
            dropped: 0,
        }
    }

    /// Alerts that go nowhere (tests of the order path without a server).
    pub fn disabled() -> Alerts {
        Alerts {
            tx: None,
            task: None,
            dropped: 0,
        }
    }

    /// Queues `alert` for publishing; never waits.
    pub fn raise(&mut self, alert: SecurityAlert) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(alert) {
            self.dropped += 1;
            let alert = match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            };
            error!(
                alert_id = %alert.alert_id,
                kind = %violation_token(alert.kind()),
                dropped = self.dropped,
                "security alert dropped: the alert queue is full (the ERROR line of the refusal stands)"
            );
        }
    }

    /// Publishes what is queued (waiting at most `timeout`), then stops the task.
    pub async fn close(&mut self, timeout: std::time::Duration) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(timeout, task).await.is_err() {
                error!("security alerts still unpublished at shutdown were dropped");
            }
        }
    }
}

/// One alert, published and its JetStream ack awaited; a failure is logged, never returned.
async fn publish(js: &jetstream::Context, alert: SecurityAlert) {
    let subject = subject(alert.kind());
    let payload = Bytes::from(alert.encode_to_vec());
    let stored = match js.publish(subject.clone(), payload).await {
        Ok(ack) => ack.await.map(|a| a.sequence).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match stored {
        Ok(sequence) => {
            debug!(alert_id = %alert.alert_id, subject, sequence, "security alert stored")
        }
        Err(e) => error!(
            alert_id = %alert.alert_id,
            subject,
            error = %e,
            "security alert not stored on the ALERTS stream"
        ),
    }
}
