//! Partitioned engines (`partitions.rs`): an order whose symbol belongs to a partition this
//! engine instance does not serve is relayed to that partition's owner, on
//! `bridge.v1.engine.<partition id>.submit`, with the signer this instance verified; the
//! owner's answer is passed back as it is. Only the partition's current owner subscribes to
//! that subject, so during a takeover there is no responder: the request was delivered to
//! nobody, and the sender is told so ([`contract::SERVICE_ERROR_NO_OWNER`]), which its retry
//! policy treats as "engine unavailable" (safe to send again).
//!
//! A relay never waits in the engine's loop: two instances relaying to each other would each
//! wait for the other. The synchronous path answers from a task. The queued path re-publishes
//! a message of the shared subjects per partition to ORDERS itself
//! ([`contract::queue_partition`], drained by each partition's own consumer) and acks it from
//! a task once every part is stored.

use async_nats::{Client, HeaderMap, Message, RequestErrorKind};
use bytes::Bytes;

use prost::Message as _;

use crate::contract;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::partition::{partition_id, partition_of};
use crate::proto::v1 as pb;
use crate::service::{Incoming, ServiceError};

impl Engine {
    /// The partition owning `symbol` when this engine instance serves another one; `None`
    /// when it serves that one, or every symbol (unpartitioned).
    pub(crate) fn foreign_partition(&self, symbol: &str) -> Option<u32> {
        let mine = self.cfg.partition?;
        let p = partition_of(symbol);
        (p != mine).then_some(p)
    }

    /// Partitioned: relays every submit of `reqs` whose symbol another partition owns (once
    /// authorized here; a refusal is answered here) and returns the others, to serve here.
    pub(crate) async fn relay_foreign_submits(
        &mut self,
        reqs: Vec<Incoming>,
    ) -> Result<Vec<Incoming>, EngineError> {
        if self.cfg.partition.is_none() {
            return Ok(reqs);
        }
        let mut here = Vec::with_capacity(reqs.len());
        for req in reqs {
            let foreign = if is_relayed(req.msg().subject.as_str()) {
                None // relayed to this owner: never relayed again
            } else {
                pb::NewOrder::decode(req.msg().payload.clone())
                    .ok()
                    .and_then(|o| self.foreign_partition(&o.symbol))
            };
            let Some(partition) = foreign else {
                here.push(req);
                continue;
            };
            if let Some((_, _, signer)) = self.take_submit(&req).await? {
                self.relay_submit(req, partition, &signer);
            }
        }
        Ok(here)
    }

    /// Relays a synchronous submit (authorized here: `signer`) to the owner of `partition`;
    /// a task answers `req` with the owner's answer.
    pub(crate) fn relay_submit(&self, req: Incoming, partition: u32, signer: &str) {
        let msg = req.msg();
        let mut headers = msg.headers.clone().unwrap_or_default();
        headers.insert(contract::HEADER_SIGNER, signer);
        let payload = msg.payload.clone();
        let client = self.client.clone();
        tokio::spawn(async move {
            match relay(&client, partition, headers, payload).await {
                Ok(answer) => match ServiceError::of_answer(answer.headers.as_ref()) {
                    Some(error) => req.fail(error).await,
                    None => req.answer(answer.payload.to_vec()).await,
                },
                Err(error) => req.fail(error).await,
            }
        });
    }
}

impl Engine {
    /// Partitioned: the partition engine id that owns the live order of `record` when it is
    /// not this instance (a replace or status query is then relayed to it); `None` for this
    /// instance's orders, final ones (every engine answers those from the order store alike),
    /// and when unpartitioned.
    pub(crate) fn live_elsewhere(
        &self,
        record: &crate::proto::state::OrderRecord,
    ) -> Option<String> {
        self.cfg.partition?;
        let status =
            pb::OrderStatus::try_from(record.status).unwrap_or(pb::OrderStatus::Unspecified);
        (record.engine_id != self.cfg.engine_id && !crate::venue::is_final(status))
            .then(|| record.engine_id.clone())
    }

    /// Relays a request (authorized here: `signer`) to `subject` (a partition owner's relay
    /// endpoint); a task publishes the owner's answer, as it is, to the request's reply
    /// subject.
    pub(crate) fn relay_request(&self, req: &Incoming, subject: String, signer: &str) {
        let msg = req.msg();
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        let mut headers = msg.headers.clone().unwrap_or_default();
        headers.insert(contract::HEADER_SIGNER, signer);
        let payload = msg.payload.clone();
        let client = self.client.clone();
        tokio::spawn(async move {
            let (headers, payload) = match client
                .request_with_headers(subject.clone(), headers, payload)
                .await
            {
                Ok(answer) => (answer.headers.unwrap_or_default(), answer.payload),
                Err(e) => {
                    let error = if e.kind() == RequestErrorKind::NoResponders {
                        ServiceError::new(contract::SERVICE_ERROR_NO_OWNER, &format!("{subject}: no owner right now (a takeover): nothing happened, send again"))
                    } else {
                        ServiceError::new(
                            crate::service::incoming::INTERNAL,
                            &format!("relay to {subject} failed: {e}; outcome unknown"),
                        )
                    };
                    let mut h = HeaderMap::new();
                    h.insert(
                        async_nats::service::NATS_SERVICE_ERROR,
                        error.status.as_str(),
                    );
                    h.insert(
                        async_nats::service::NATS_SERVICE_ERROR_CODE,
                        error.code.to_string().as_str(),
                    );
                    (h, Bytes::new())
                }
            };
            if let Err(e) = client.publish_with_headers(reply, headers, payload).await {
                tracing::warn!(error = %e, "relayed answer not sent");
            }
        });
    }
}

/// The signer a peer engine vouched for, when `msg` is a relay (`None`: a client's request,
/// to be authorized here).
pub(crate) fn relayed_signer(msg: &Message) -> Option<String> {
    is_relayed(msg.subject.as_str()).then(|| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(contract::HEADER_SIGNER))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    })
}

/// Is `subject` an engine-to-engine relay (sent by a peer engine, which checked the signer)?
pub(crate) fn is_relayed(subject: &str) -> bool {
    // The engine-to-engine subjects share this prefix (`bridge.v1.engine.`).
    subject.starts_with(contract::ENGINE_SUBMIT_PREFIX)
}

/// One relayed order: the owner's answer, or why there is none (no owner now: nothing
/// happened; no answer in time: the outcome is unknown).
pub(crate) async fn relay(
    client: &Client,
    partition: u32,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<Message, ServiceError> {
    let id = partition_id(partition);
    let subject = contract::engine_submit(&id);
    client
        .request_with_headers(subject, headers, payload)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => ServiceError::new(
                contract::SERVICE_ERROR_NO_OWNER,
                &format!("partition {id} has no owner right now (a takeover): nothing happened, send again"),
            ),
            _ => ServiceError::new(
                crate::service::incoming::INTERNAL,
                &format!("relay to the owner of partition {id} failed: {e}; outcome unknown, query the order status"),
            ),
        })
}

/// How long a queued message whose orders could not all be re-published waits before it is
/// delivered again.
const RELAY_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

impl Engine {
    /// Partitioned: every ORDERS message of `msgs` taken from the shared subjects (queue,
    /// queue_batch) is re-published, its orders grouped by partition in their order, as one
    /// `OrderBatch` per partition on [`contract::queue_partition`] (the signature checked here
    /// once, against the time JetStream stored the message; the signer in `Bridge-Signer`;
    /// `Nats-Msg-Id` = the message's stream sequence and the partition, so a second delivery
    /// is a duplicate), by a task that acks the message once every batch is stored, and asks
    /// for it again ([`RELAY_RETRY_DELAY`]) if one is not. Each partition's owner drains its
    /// own consumer. Returns the messages to take here: those of this partition's subject,
    /// and those the local path refuses or rejects (undecodable, an unsupported version, a
    /// failed check).
    pub(crate) fn relay_foreign_queued(
        &mut self,
        msgs: Vec<async_nats::jetstream::Message>,
    ) -> Vec<async_nats::jetstream::Message> {
        if self.cfg.partition.is_none() {
            return msgs;
        }
        let mut here = Vec::with_capacity(msgs.len());
        for msg in msgs {
            match self.relayable(&msg) {
                Some(orders) => self.republish(msg, orders),
                None => here.push(msg),
            }
        }
        here
    }

    /// The orders of a shared-subject message to re-publish, with their signer; `None`: take
    /// it here.
    fn relayable(
        &mut self,
        msg: &async_nats::jetstream::Message,
    ) -> Option<(Vec<pb::NewOrder>, String)> {
        let subject = msg.subject.as_str();
        if super::queued_batch::is_repartitioned(subject) {
            return None;
        }
        let orders = if subject.starts_with(contract::QUEUE_BATCH_PREFIX) {
            pb::OrderBatch::decode(msg.payload.clone()).ok()?.orders
        } else {
            vec![pb::NewOrder::decode(msg.payload.clone()).ok()?]
        };
        if orders.is_empty() || self.check_version(msg.headers.as_ref()).is_some() {
            return None;
        }
        let (stored_ns, stream_seq) = self.stored_at(msg);
        let verified = self
            .authorize(
                subject,
                &msg.payload,
                msg.headers.as_ref(),
                stored_ns,
                stream_seq,
            )
            .ok()?;
        let signer = match &verified {
            None => String::new(),
            Some(v) => {
                for order in &orders {
                    v.check_account(&order.account).ok()?;
                }
                v.nkey.clone()
            }
        };
        Some((orders, signer))
    }

    fn republish(
        &self,
        msg: async_nats::jetstream::Message,
        (orders, signer): (Vec<pb::NewOrder>, String),
    ) {
        let js = async_nats::jetstream::new(self.client.clone());
        let seq = msg.info().map_or(0, |i| i.stream_sequence);
        let mut by_partition: std::collections::BTreeMap<u32, Vec<pb::NewOrder>> =
            std::collections::BTreeMap::new();
        for order in orders {
            by_partition
                .entry(partition_of(&order.symbol))
                .or_default()
                .push(order);
        }
        let mut headers = HeaderMap::new();
        if let Some(h) = msg.headers.as_ref() {
            for name in [
                contract::HEADER_CORRELATION_ID,
                contract::HEADER_TRACEPARENT,
                contract::HEADER_SCHEMA_VERSION,
            ] {
                if let Some(v) = h.get(name) {
                    headers.insert(name, v.as_str());
                }
            }
        }
        headers.insert(contract::HEADER_SIGNER, signer.as_str());
        tokio::spawn(async move {
            let publishes = by_partition.into_iter().map(|(p, orders)| {
                let js = js.clone();
                let mut headers = headers.clone();
                headers.insert(contract::HEADER_MSG_ID, format!("relay:{seq}:{p}").as_str());
                let account = orders[0].account.clone();
                let subject = contract::queue_partition(&p.to_string(), &account);
                let payload = Bytes::from(pb::OrderBatch { orders }.encode_to_vec());
                async move {
                    js.publish_with_headers(subject, headers, payload)
                        .await?
                        .await
                        .map(|_| ())
                        .map_err(async_nats::Error::from)
                }
            });
            let stored = futures::future::join_all(publishes).await;
            if let Some(Err(e)) = stored.into_iter().find(Result::is_err) {
                tracing::warn!(stream_seq = seq, error = %e, "queued message not re-published to its partitions: delivered again");
                let nak = async_nats::jetstream::AckKind::Nak(Some(RELAY_RETRY_DELAY));
                if let Err(e) = msg.ack_with(nak).await {
                    tracing::warn!(error = %e, "nak failed: the message is delivered again after the ack wait");
                }
                return;
            }
            if let Err(e) = msg.ack().await {
                tracing::warn!(error = %e, "re-published message not acked: delivered again after the ack wait (its batches are duplicates)");
            }
        });
    }
}
