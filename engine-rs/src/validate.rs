//! Validation and risk checks of an incoming `NewOrder`. Pure: time is passed in.
//!
//! Every failure names the field (path in the message), the rule and a human explanation; all
//! failures of a message are collected, not just the first. Rule names are stable API.

use std::collections::BTreeMap;

use crate::book::{Side, TimeInForce};
use crate::fixed;
use crate::limits::SymbolLimits;
use crate::proto::v1::{self as pb, FieldError, RejectReason};

pub mod mass_cancel;

/// An order that passed every check, in engine units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    pub side: Side,
    pub limit: Option<i64>,
    pub qty: i64,
    pub tif: TimeInForce,
}

/// Why an order was refused: a reason code and every field that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub errors: Vec<FieldError>,
}

impl Rejection {
    pub fn single(reason: RejectReason, field: &str, rule: &str, message: String) -> Self {
        Rejection {
            reason,
            errors: vec![field_error(field, rule, message)],
        }
    }

    pub fn text(&self) -> String {
        self.errors
            .iter()
            .map(|e| format!("{}: {} [{}]", e.field, e.message, e.rule))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub fn field_error(field: &str, rule: &str, message: String) -> FieldError {
    FieldError {
        field: field.into(),
        rule: rule.into(),
        message,
    }
}

// Size limits of a NewOrder, declared once in the contract (schemas/bridge/v1/contract.toml,
// generated into `crate::contract` and Python's `bridge.contract`). Together they bound
// everything an order puts into its record (order store) and its reports (see
// `intake::RECORD_BOUND`), far below the server's max_payload (1 MiB).
pub use crate::contract::{
    MAX_ACCOUNT_BYTES, MAX_CLIENT_ORDER_ID_BYTES, MAX_CORRELATION_ID_BYTES, MAX_NEW_ORDER_BYTES,
    MAX_SYMBOL_BYTES, MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES,
};
pub use crate::sessions::MAX_SESSION_ID_BYTES;
/// How much of an offending input value a field error message quotes.
const ECHO_CHARS: usize = 40;

/// `s` quoted for an error message, shortened to a bounded prefix when long: an error must
/// never carry an unbounded copy of the input into an ack, a record or a report.
pub fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// The error for an encoded NewOrder over [`MAX_NEW_ORDER_BYTES`], if it is.
pub fn message_size_error(len: usize) -> Option<FieldError> {
    (len > MAX_NEW_ORDER_BYTES).then(|| {
        field_error(
            "<message>",
            "max_bytes",
            format!("the encoded order is {len} bytes; at most {MAX_NEW_ORDER_BYTES} are allowed"),
        )
    })
}

/// True when every tag is within its limits (count, key and value sizes).
pub fn tags_within_limits(tags: &std::collections::HashMap<String, String>) -> bool {
    tags.len() <= MAX_TAGS
        && tags
            .iter()
            .all(|(k, v)| k.len() <= MAX_TAG_KEY_BYTES && v.len() <= MAX_TAG_VALUE_BYTES)
}

/// Accounts starting with this belong to the venue itself (its seeded liquidity is the
/// account `_house`); no client order may use one.
pub const RESERVED_ACCOUNT_PREFIX: &str = "_";

/// `[A-Za-z0-9_-]{1,max}`: ids are subject tokens and KV key parts.
pub fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub struct Validator<'a> {
    pub symbols: &'a BTreeMap<String, SymbolLimits>,
    pub max_notional: i64,
}

impl Validator<'_> {
    /// Checks fields, then risk limits, then the deadline against `now_unix_ns`.
    pub fn check(&self, o: &pb::NewOrder, now_unix_ns: i64) -> Result<ValidOrder, Rejection> {
        let mut errors = Vec::new();
        let mut push = |field: &str, rule: &str, message: String| {
            errors.push(field_error(field, rule, message));
        };
        if !valid_id(&o.client_order_id, MAX_CLIENT_ORDER_ID_BYTES) {
            push(
                "client_order_id",
                "pattern",
                format!(
                    "{} must be 1-{MAX_CLIENT_ORDER_ID_BYTES} characters of [A-Za-z0-9_-]",
                    echo(&o.client_order_id)
                ),
            );
        }
        if !valid_id(&o.account, MAX_ACCOUNT_BYTES) {
            push(
                "account",
                "pattern",
                format!(
                    "{} must be 1-{MAX_ACCOUNT_BYTES} characters of [A-Za-z0-9_-]",
                    echo(&o.account)
                ),
            );
        } else if o.account.starts_with(RESERVED_ACCOUNT_PREFIX) {
            push(
                "account",
                "reserved",
                format!(
                    "{} starts with {RESERVED_ACCOUNT_PREFIX:?}, which is reserved for the venue's own orders",
                    echo(&o.account)
                ),
            );
        }
        if o.symbol.is_empty() {
            push("symbol", "required", "symbol is required".into());
        } else if o.symbol.len() > MAX_SYMBOL_BYTES {
            push(
                "symbol",
                "max_bytes",
                format!(
                    "{} is longer than {MAX_SYMBOL_BYTES} bytes",
                    echo(&o.symbol)
                ),
            );
        }
        let side = match pb::Side::try_from(o.side) {
            Ok(pb::Side::Buy) => Some(Side::Buy),
            Ok(pb::Side::Sell) => Some(Side::Sell),
            _ => {
                push(
                    "side",
                    "required",
                    format!("must be BUY or SELL, got {}", o.side),
                );
                None
            }
        };
        let order_type = match pb::OrderType::try_from(o.order_type) {
            Ok(t @ (pb::OrderType::Market | pb::OrderType::Limit)) => Some(t),
            _ => {
                push(
                    "order_type",
                    "required",
                    format!("must be MARKET or LIMIT, got {}", o.order_type),
                );
                None
            }
        };
        let tif = match pb::TimeInForce::try_from(o.time_in_force) {
            Ok(pb::TimeInForce::Day) => Some(TimeInForce::Day),
            Ok(pb::TimeInForce::Gtc) => Some(TimeInForce::Gtc),
            Ok(pb::TimeInForce::Ioc) => Some(TimeInForce::Ioc),
            Ok(pb::TimeInForce::Fok) => Some(TimeInForce::Fok),
            _ => {
                push(
                    "time_in_force",
                    "required",
                    format!("must be DAY, GTC, IOC or FOK, got {}", o.time_in_force),
                );
                None
            }
        };
        let qty = match o.quantity.as_ref().map(fixed::from_decimal) {
            None => {
                push("quantity", "required", "quantity is required".into());
                None
            }
            Some(Err(e)) => {
                push("quantity", "decimal", format!("quantity {e}"));
                None
            }
            Some(Ok(q)) if q <= 0 => {
                push(
                    "quantity",
                    "positive",
                    "quantity must be greater than 0".into(),
                );
                None
            }
            Some(Ok(q)) => Some(q),
        };
        let limit = match (order_type, o.limit_price.as_ref().map(fixed::from_decimal)) {
            (Some(pb::OrderType::Limit), None) => {
                push(
                    "limit_price",
                    "required_for_limit",
                    "a LIMIT order needs a price".into(),
                );
                None
            }
            (Some(pb::OrderType::Market), Some(_)) => {
                push(
                    "limit_price",
                    "forbidden_for_market",
                    "a MARKET order must not carry a price".into(),
                );
                None
            }
            (_, Some(Err(e))) => {
                push("limit_price", "decimal", format!("limit_price {e}"));
                None
            }
            (_, Some(Ok(p))) if p <= 0 => {
                push(
                    "limit_price",
                    "positive",
                    "limit_price must be greater than 0".into(),
                );
                None
            }
            (_, p) => p.and_then(Result::ok),
        };
        if !o.session_id.is_empty() && !valid_id(&o.session_id, MAX_SESSION_ID_BYTES) {
            push(
                "session_id",
                "pattern",
                format!(
                    "{} must be empty or 1-{MAX_SESSION_ID_BYTES} characters of [A-Za-z0-9_-]",
                    echo(&o.session_id)
                ),
            );
        }
        if o.tags.len() > MAX_TAGS {
            push(
                "tags",
                "max_items",
                format!("{} tags; at most {MAX_TAGS} are allowed", o.tags.len()),
            );
        }
        // One error per rule, naming how many tags break it and one of them: never one error
        // per tag (an order may carry tens of thousands).
        let long_keys: Vec<&String> = o
            .tags
            .keys()
            .filter(|k| k.len() > MAX_TAG_KEY_BYTES)
            .collect();
        if let Some(first) = long_keys.iter().min() {
            push(
                "tags",
                "key_max_bytes",
                format!(
                    "{} tag key(s) longer than {MAX_TAG_KEY_BYTES} bytes, e.g. {}",
                    long_keys.len(),
                    echo(first)
                ),
            );
        }
        let long_values: Vec<&String> = o
            .tags
            .iter()
            .filter(|(_, v)| v.len() > MAX_TAG_VALUE_BYTES)
            .map(|(k, _)| k)
            .collect();
        if let Some(first) = long_values.iter().min() {
            push(
                "tags",
                "value_max_bytes",
                format!(
                    "{} tag value(s) longer than {MAX_TAG_VALUE_BYTES} bytes, e.g. the value of {}",
                    long_values.len(),
                    echo(first)
                ),
            );
        }
        if !errors.is_empty() {
            return Err(Rejection {
                reason: RejectReason::InvalidField,
                errors,
            });
        }
        let (Some(side), Some(tif), Some(qty)) = (side, tif, qty) else {
            return Err(Rejection::single(
                RejectReason::InvalidField,
                "<order>",
                "incomplete",
                "order is incomplete".into(),
            ));
        };

        let Some(limits) = self.symbols.get(&o.symbol) else {
            return Err(Rejection::single(
                RejectReason::UnknownSymbol,
                "symbol",
                "known_symbol",
                format!("{} is not traded by this engine", echo(&o.symbol)),
            ));
        };
        if qty > limits.max_order_qty {
            return Err(Rejection::single(
                RejectReason::RiskLimit,
                "quantity",
                "max_order_qty",
                format!(
                    "quantity {} exceeds the maximum {} for {}",
                    show(qty),
                    show(limits.max_order_qty),
                    o.symbol
                ),
            ));
        }
        let price_for_risk = limit.unwrap_or(limits.reference_price);
        let notional = fixed::notional_e16(price_for_risk, qty) / i128::from(fixed::units(1));
        if notional > i128::from(self.max_notional) {
            return Err(Rejection::single(
                RejectReason::RiskLimit,
                "quantity",
                "max_order_notional",
                format!(
                    "notional {} exceeds the maximum {}",
                    show(i64::try_from(notional).unwrap_or(i64::MAX)),
                    show(self.max_notional)
                ),
            ));
        }
        if o.deadline_unix_ns != 0 && now_unix_ns > o.deadline_unix_ns {
            return Err(Rejection::single(
                RejectReason::DeadlineExceeded,
                "deadline_unix_ns",
                "deadline",
                format!(
                    "arrived {} ms after its deadline",
                    (now_unix_ns - o.deadline_unix_ns) / 1_000_000
                ),
            ));
        }
        Ok(ValidOrder {
            side,
            limit,
            qty,
            tif,
        })
    }
}

/// Fixed point rendered for messages, e.g. 12.5.
pub fn show(v: i64) -> String {
    let one = fixed::units(1);
    let (int, frac) = (v / one, (v % one).abs());
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:08}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
