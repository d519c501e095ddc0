//! Partitioned engines (`partitions.rs`): an order whose symbol belongs to a partition this
//! engine instance does not serve is relayed to that partition's owner, on
//! `bridge.v1.engine.<partition id>.submit`, with the signer this instance verified; the
//! owner's answer is passed back as it is. Only the partition's current owner subscribes to
//! that subject, so during a takeover there is no responder: the request was delivered to
//! nobody, and the sender is told so ([`contract::SERVICE_ERROR_NO_OWNER`]), which its retry
//! policy treats as "engine unavailable" (safe to send again).
//!
//! A relay never waits in the engine's loop: two instances relaying to each other would each
//! wait for the other. The synchronous path answers from a task; the queued path acks each
//! relayed message from a task once every order of it is answered (`queued.rs`).

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

/// Is `subject` an engine-to-engine relay (sent by a peer engine, which checked the signer)?
pub(crate) fn is_relayed(subject: &str) -> bool {
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

/// How long a queued message whose orders could not all be relayed waits before it is
/// delivered again (a takeover lasts about one lease TTL).
const RELAY_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

impl Engine {
    /// Partitioned: every ORDERS message of `msgs` that brings an order of another partition
    /// is relayed, each of its orders to its symbol's owner in the message's order (the
    /// signature checked here once, against the time JetStream stored the message), by a task
    /// that acks the message once every order has its owner's answer, and asks for it again
    /// ([`RELAY_RETRY_DELAY`]) if one has none (the owners' order store answers a second
    /// delivery's orders as duplicates). Returns the messages to take here: those of this
    /// partition only, and those the local path refuses or rejects (undecodable, an
    /// unsupported version, a failed check).
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
                Some(orders) => self.relay_queued(msg, orders),
                None => here.push(msg),
            }
        }
        here
    }

    /// The orders of a message to relay with their signer; `None`: take it here.
    fn relayable(
        &mut self,
        msg: &async_nats::jetstream::Message,
    ) -> Option<Vec<(pb::NewOrder, String)>> {
        let subject = msg.subject.as_str();
        let orders = if subject.starts_with(contract::QUEUE_BATCH_PREFIX) {
            pb::OrderBatch::decode(msg.payload.clone()).ok()?.orders
        } else {
            vec![pb::NewOrder::decode(msg.payload.clone()).ok()?]
        };
        if orders
            .iter()
            .all(|o| self.foreign_partition(&o.symbol).is_none())
        {
            return None;
        }
        if self.check_version(msg.headers.as_ref()).is_some() {
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
        let mut out = Vec::with_capacity(orders.len());
        for order in orders {
            let signer = match &verified {
                None => String::new(),
                Some(v) => {
                    v.check_account(&order.account).ok()?;
                    v.nkey.clone()
                }
            };
            out.push((order, signer));
        }
        Some(out)
    }

    fn relay_queued(
        &self,
        msg: async_nats::jetstream::Message,
        orders: Vec<(pb::NewOrder, String)>,
    ) {
        let client = self.client.clone();
        let trace = crate::trace::Trace::of(msg.headers.as_ref());
        let version = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(contract::HEADER_SCHEMA_VERSION))
            .map(|v| v.as_str().to_string());
        tokio::spawn(async move {
            for (order, signer) in orders {
                let mut headers = HeaderMap::new();
                trace.insert_into(&mut headers);
                headers.insert(contract::HEADER_SIGNER, signer.as_str());
                if let Some(v) = &version {
                    headers.insert(contract::HEADER_SCHEMA_VERSION, v.as_str());
                }
                let partition = partition_of(&order.symbol);
                let payload = Bytes::from(order.encode_to_vec());
                if let Err(e) = relay(&client, partition, headers, payload).await {
                    tracing::warn!(client_order_id = %order.client_order_id, reason = %e.status, "queued order not relayed: the message is delivered again");
                    let nak = async_nats::jetstream::AckKind::Nak(Some(RELAY_RETRY_DELAY));
                    if let Err(e) = msg.ack_with(nak).await {
                        tracing::warn!(error = %e, "nak failed: the message is delivered again after the ack wait");
                    }
                    return;
                }
            }
            if let Err(e) = msg.ack().await {
                tracing::warn!(error = %e, "relayed message not acked: delivered again after the ack wait (its orders answer as duplicates)");
            }
        });
    }
}
