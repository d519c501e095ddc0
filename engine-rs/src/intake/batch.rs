//! An `OrderBatch` (contract 1.2) split into its orders, pure: no I/O, no engine state.
//!
//! The batch is read field by field (protobuf wire format) rather than decoded as one message,
//! so that each order is handed on as the bytes it came in: its own size is checked against
//! `MAX_NEW_ORDER_BYTES` exactly as a single queued order's is, and nothing is copied. Unknown
//! fields of the batch are skipped (a later minor may add some); anything else that is not an
//! `OrderBatch` (a truncated field, a group, `orders` of another wire type, an order that is
//! not a `NewOrder`) makes the whole batch undecodable: none of its orders is taken in, the
//! engine terminates the message. The bounds of the contract ([`MAX_BATCH_ORDERS`],
//! [`MAX_BATCH_BYTES`]) are checked first, so the work one message can cause is bounded.

use bytes::Bytes;
use prost::Message as _;

use crate::proto::v1 as pb;

pub use crate::contract::{MAX_BATCH_BYTES, MAX_BATCH_ORDERS};

/// `OrderBatch.orders`.
const ORDERS_FIELD: u64 = 1;

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// One order of a batch: decoded, and the size of its encoding (what the size limit of a
/// NewOrder is checked against).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOrder {
    pub order: pb::NewOrder,
    pub encoded_len: usize,
}

/// Why a batch is not one: every variant says where, for the ERROR line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch of {len} bytes is over MAX_BATCH_BYTES = {max}", max = MAX_BATCH_BYTES)]
    TooLarge { len: usize },
    #[error("batch holds more than MAX_BATCH_ORDERS = {max} orders", max = MAX_BATCH_ORDERS)]
    TooManyOrders,
    #[error("not an OrderBatch: {what} at byte {at}")]
    Wire { what: &'static str, at: usize },
    #[error("order {index} of the batch is not a bridge.v1.NewOrder: {error}")]
    Order { index: usize, error: String },
}

/// The byte ranges of the orders of an encoded `OrderBatch`, in order.
pub fn order_ranges(payload: &[u8]) -> Result<Vec<std::ops::Range<usize>>, BatchError> {
    if payload.len() > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge { len: payload.len() });
    }
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let key_at = at;
        let key = varint(payload, &mut at).ok_or(BatchError::Wire {
            what: "truncated field key",
            at: key_at,
        })?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 || key > u64::from(u32::MAX) {
            return Err(BatchError::Wire {
                what: "field number out of range",
                at: key_at,
            });
        }
        let end = match wire {
            WIRE_VARINT => varint(payload, &mut at).map(|_| at),
            WIRE_FIXED64 => Some(at + 8),
            WIRE_FIXED32 => Some(at + 4),
            WIRE_LEN => varint(payload, &mut at)
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| at.checked_add(len)),
            _ => {
                return Err(BatchError::Wire {
                    what: "unsupported wire type (a group)",
                    at: key_at,
                })
            }
        }
        .filter(|end| *end <= payload.len())
        .ok_or(BatchError::Wire {
            what: "truncated field",
            at: key_at,
        })?;
        if field == ORDERS_FIELD {
            if wire != WIRE_LEN {
                return Err(BatchError::Wire {
                    what: "orders is not length-delimited",
                    at: key_at,
                });
            }
            if ranges.len() == MAX_BATCH_ORDERS {
                return Err(BatchError::TooManyOrders);
            }
            ranges.push(at..end);
        }
        at = end;
    }
    Ok(ranges)
}

/// The orders of an encoded `OrderBatch`, each decoded, in order (see the module docs).
pub fn decode(payload: &Bytes) -> Result<Vec<BatchOrder>, BatchError> {
    order_ranges(payload)?
        .into_iter()
        .enumerate()
        .map(|(index, range)| {
            let encoded_len = range.len();
            pb::NewOrder::decode(payload.slice(range))
                .map(|order| BatchOrder { order, encoded_len })
                .map_err(|e| BatchError::Order {
                    index,
                    error: e.to_string(),
                })
        })
        .collect()
}

/// The client order ids a batch seems to carry, for answering a refused batch order by order
/// (only echoed: the batch is not trusted). Empty when it does not decode.
pub fn echoed_ids(payload: &Bytes) -> Vec<String> {
    decode(payload)
        .map(|orders| {
            orders
                .into_iter()
                .map(|o| o.order.client_order_id)
                .collect()
        })
        .unwrap_or_default()
}

/// A base-128 varint at `*at` (at most 10 bytes), advancing `*at` past it.
fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in 0..10 {
        let byte = *buf.get(*at)?;
        *at += 1;
        if shift == 9 && byte > 1 {
            return None; // more than 64 bits
        }
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests;
