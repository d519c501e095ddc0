//! The relay of a mass cancel to the other live engines, and the one reply made of every
//! engine's part.
//!
//! Which engines: the holders of the lease bucket's keys other than this one
//! ([`crate::lease::peers`]); with a symbol, only the holder of that symbol's lease. Each gets
//! the request as it came, on [`contract::engine_mass_cancel`] of its id, and cancels in its own
//! books only (it relays nothing further). The requests go out together; the engine waits for
//! them like the cancel relay waits for its owner (at most the NATS request timeout).
//!
//! The reply ([`combine`]) never claims more than was canceled and never hides an engine that
//! did not take part:
//!
//! - every engine answered ACCEPTED: ACCEPTED, `canceled` the sum, `engine_ids` this engine
//!   then the peers;
//! - a peer did not answer (not running: no responder; or no answer in time: what it did is
//!   unknown), answered with an error or a rejection, or the lease bucket could not be read:
//!   REJECTED with reason ENGINE_UNAVAILABLE; `canceled` is still the sum of what the engines
//!   that answered canceled, `engine_ids` lists only them, and `text` names each engine left
//!   out and why. Re-sending the request is safe (idempotent) and completes it once they are
//!   back.

use bytes::Bytes;
use futures::future::join_all;
use prost::Message as _;

use crate::contract;
use crate::engine::Engine;
use crate::lease::peers::{peer_engines, read_leases};
use crate::proto::v1::{self as pb, AckStatus, RejectReason};
use crate::service::ServiceError;
use crate::trace::Trace;
use crate::validate::truncate;

/// The longest `text` a reply carries.
const MAX_TEXT_BYTES: usize = 1024;

/// What one peer engine made of a relayed mass cancel.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerAnswer {
    /// Its reply.
    Answered(pb::MassCancelReply),
    /// No usable reply: why.
    Failed(String),
}

/// Where the peers come from: the engines found, or why none could be.
#[derive(Debug, Clone, PartialEq)]
pub struct Relayed {
    pub answers: Vec<(String, PeerAnswer)>,
    /// The lease bucket could not be read: peers may have been missed.
    pub unknown_peers: Option<String>,
}

impl Engine {
    /// Relays a mass cancel (its payload as received) to every other live engine that could
    /// hold matching orders, and collects their answers.
    pub(super) async fn relay_mass_cancel(
        &self,
        payload: &Bytes,
        symbol: Option<&str>,
        trace: &Trace,
    ) -> Relayed {
        if let Some(mine) = self.cfg.partition {
            // Partitioned: every other partition (or the symbol's), whoever owns it now.
            let partitions: Vec<u32> = match symbol {
                Some(s) => vec![crate::partition::partition_of(s)],
                None => (0..crate::partition::PARTITIONS_U32).collect(),
            };
            let peers: Vec<String> = partitions
                .into_iter()
                .filter(|p| *p != mine)
                .map(crate::partition::partition_id)
                .collect();
            return self.relay_to(&peers, payload, trace).await;
        }
        let leases = match read_leases(&self.client, symbol).await {
            Ok(leases) => leases,
            Err(e) => {
                return Relayed {
                    answers: Vec::new(),
                    unknown_peers: Some(e),
                }
            }
        };
        let peers = peer_engines(
            leases.iter().map(|(k, h)| (k.as_str(), h.as_ref())),
            &self.cfg.engine_id,
            symbol,
        );
        self.relay_to(&peers, payload, trace).await
    }

    /// The mass cancel relayed to each of `peers` (engine ids), their answers collected.
    async fn relay_to(&self, peers: &[String], payload: &Bytes, trace: &Trace) -> Relayed {
        let requests = peers
            .iter()
            .map(|peer| self.request(contract::engine_mass_cancel(peer), payload.clone(), trace));
        let answers = join_all(requests)
            .await
            .into_iter()
            .zip(peers.iter().cloned())
            .map(|(answer, peer)| (peer, peer_answer(answer)))
            .collect();
        Relayed {
            answers,
            unknown_peers: None,
        }
    }
}

/// One peer's answer, read.
fn peer_answer(answer: Result<async_nats::Message, async_nats::RequestError>) -> PeerAnswer {
    use async_nats::RequestErrorKind as Kind;
    let msg = match answer {
        Ok(msg) => msg,
        Err(e) => {
            return PeerAnswer::Failed(match e.kind() {
                Kind::NoResponders => "not running (nothing serves its relay subject)".into(),
                Kind::TimedOut => "no answer in time: what it canceled is unknown (re-send)".into(),
                _ => format!("unreachable: {e}"),
            })
        }
    };
    if let Some(error) = ServiceError::of_answer(msg.headers.as_ref()) {
        return PeerAnswer::Failed(format!("answered error {}: {}", error.code, error.status));
    }
    match pb::MassCancelReply::decode(msg.payload) {
        Ok(reply) => PeerAnswer::Answered(reply),
        Err(e) => PeerAnswer::Failed(format!("undecodable answer: {e}")),
    }
}

/// The reply of the engine that received the request: its own part (`local`, ACCEPTED) and
/// every peer's (see the module docs).
pub fn combine(mut local: pb::MassCancelReply, relayed: Relayed) -> pb::MassCancelReply {
    let mut left_out: Vec<String> = Vec::new();
    if let Some(why) = relayed.unknown_peers {
        left_out.push(format!(
            "other engines could not be looked up ({why}): only this engine's orders were \
             canceled"
        ));
    }
    for (peer, answer) in relayed.answers {
        match answer {
            PeerAnswer::Answered(r) => {
                local.canceled = local.canceled.saturating_add(r.canceled);
                if r.status == AckStatus::Accepted as i32 {
                    local.engine_ids.push(peer);
                } else {
                    let reason = RejectReason::try_from(r.reason)
                        .map_or_else(|_| r.reason.to_string(), |x| x.as_str_name().to_string());
                    left_out.push(format!("engine {peer} rejected it ({reason}: {})", r.text));
                }
            }
            PeerAnswer::Failed(why) => left_out.push(format!("engine {peer} {why}")),
        }
    }
    let n = local.canceled;
    if left_out.is_empty() {
        local.text = format!(
            "canceled {n} open order(s) in engine(s) {}",
            local.engine_ids.join(", ")
        );
        return local;
    }
    local.status = AckStatus::Rejected as i32;
    local.reason = RejectReason::EngineUnavailable as i32;
    let text = format!(
        "incomplete: canceled {n} open order(s) in engine(s) {}; not canceled where: {}; \
         re-send the request (idempotent) once they are back",
        local.engine_ids.join(", "),
        left_out.join("; ")
    );
    local.text = truncate(&text, MAX_TEXT_BYTES).to_string();
    local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(canceled: u32) -> pb::MassCancelReply {
        pb::MassCancelReply {
            account: "ACC".into(),
            request_id: "r1".into(),
            status: AckStatus::Accepted as i32,
            canceled,
            engine_ids: vec!["engine-A".into()],
            ..Default::default()
        }
    }

    fn peer(canceled: u32) -> PeerAnswer {
        PeerAnswer::Answered(pb::MassCancelReply {
            status: AckStatus::Accepted as i32,
            canceled,
            ..Default::default()
        })
    }

    fn relayed(answers: Vec<(&str, PeerAnswer)>) -> Relayed {
        Relayed {
            answers: answers
                .into_iter()
                .map(|(p, a)| (p.to_string(), a))
                .collect(),
            unknown_peers: None,
        }
    }

    /// Alone, or every peer answered: ACCEPTED, the sum, every engine listed.
    #[test]
    fn every_engine_answered() {
        let r = combine(local(2), relayed(vec![]));
        assert_eq!(r.status, AckStatus::Accepted as i32);
        assert_eq!((r.canceled, r.engine_ids.len()), (2, 1));
        let r = combine(
            local(2),
            relayed(vec![("engine-B", peer(3)), ("engine-C", peer(0))]),
        );
        assert_eq!(r.status, AckStatus::Accepted as i32);
        assert_eq!(r.reason, RejectReason::Unspecified as i32);
        assert_eq!(r.canceled, 5);
        assert_eq!(r.engine_ids, ["engine-A", "engine-B", "engine-C"]);
        assert_eq!((r.account.as_str(), r.request_id.as_str()), ("ACC", "r1"));
    }

    /// A peer that did not answer is named, not counted, and makes the reply REJECTED
    /// (ENGINE_UNAVAILABLE) with what the others did canceled.
    #[test]
    fn an_unreachable_peer_is_not_hidden() {
        let r = combine(
            local(2),
            relayed(vec![
                ("engine-B", peer(3)),
                ("engine-C", PeerAnswer::Failed("not running".into())),
            ]),
        );
        assert_eq!(r.status, AckStatus::Rejected as i32);
        assert_eq!(r.reason, RejectReason::EngineUnavailable as i32);
        assert_eq!(r.canceled, 5);
        assert_eq!(r.engine_ids, ["engine-A", "engine-B"]);
        assert!(r.text.contains("engine engine-C not running"), "{}", r.text);
        assert!(r.text.starts_with("incomplete: canceled 5"), "{}", r.text);
    }

    /// A peer's rejection is named with its reason; peers that could not be looked up too.
    #[test]
    fn rejections_and_unknown_peers() {
        let rejected = PeerAnswer::Answered(pb::MassCancelReply {
            status: AckStatus::Rejected as i32,
            reason: RejectReason::InvalidField as i32,
            text: "bad".into(),
            ..Default::default()
        });
        let r = combine(local(1), relayed(vec![("engine-B", rejected)]));
        assert_eq!(r.status, AckStatus::Rejected as i32);
        assert_eq!(r.engine_ids, ["engine-A"]);
        assert!(
            r.text
                .contains("engine engine-B rejected it (REJECT_REASON_INVALID_FIELD: bad)"),
            "{}",
            r.text
        );
        let r = combine(
            local(0),
            Relayed {
                answers: vec![],
                unknown_peers: Some("lease bucket down".into()),
            },
        );
        assert_eq!(r.reason, RejectReason::EngineUnavailable as i32);
        assert!(r.text.contains("lease bucket down"), "{}", r.text);
    }

    /// A long list of failures is cut to a bounded text.
    #[test]
    fn text_is_bounded() {
        let answers = (0..100)
            .map(|i| (format!("engine-{i}"), PeerAnswer::Failed("x".repeat(50))))
            .collect();
        let r = combine(
            local(0),
            Relayed {
                answers,
                unknown_peers: None,
            },
        );
        assert!(r.text.len() <= MAX_TEXT_BYTES);
    }
}
