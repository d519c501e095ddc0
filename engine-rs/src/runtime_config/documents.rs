//! The runtime configuration documents (pure): each key's JSON Schema (`schemas/config/v1`,
//! compiled in: the one definition, the Python side loads the same files), parsing, schema
//! validation into `FieldError`s with the conventions of the shared vector
//! (`schemas/testdata/config_documents.json`), the engine's own checks (a symbol it has no
//! book for), and the diff between two revisions of a document.
//!
//! Field = the JSON path of the offending value, dotted, array indexes as numbers; for
//! `required` and `additionalProperties` the property's own path. Rule = the failing JSON
//! Schema keyword (or the engine's check: `known_symbol`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use serde::Deserialize;
use serde_json::Value;

use crate::contract;
use crate::fixed;
use crate::proto::v1::FieldError;
use crate::validate::field_error;

/// The field of an error about the whole document.
pub const WHOLE: &str = "<document>";

/// Every key with a schema, and the schema's text.
const SCHEMAS: [(&str, &str); 6] = [
    (
        contract::CONFIG_RISK_KEY,
        include_str!("../../../schemas/config/v1/risk.schema.json"),
    ),
    (
        contract::CONFIG_SYMBOLS_KEY,
        include_str!("../../../schemas/config/v1/symbols.schema.json"),
    ),
    (
        contract::CONFIG_TRADING_STATE_KEY,
        include_str!("../../../schemas/config/v1/trading_state.schema.json"),
    ),
    (
        contract::CONFIG_LOG_LEVELS_KEY,
        include_str!("../../../schemas/config/v1/log_levels.schema.json"),
    ),
    (
        contract::CONFIG_CLIENT_KEY,
        include_str!("../../../schemas/config/v1/client.schema.json"),
    ),
    (
        contract::CONFIG_ROUTING_KEY,
        include_str!("../../../schemas/config/v1/routing.schema.json"),
    ),
];

/// The documents this engine applies; the others (client, routing) are the client's.
pub const ENGINE_DOCUMENTS: [&str; 4] = [
    contract::CONFIG_RISK_KEY,
    contract::CONFIG_SYMBOLS_KEY,
    contract::CONFIG_TRADING_STATE_KEY,
    contract::CONFIG_LOG_LEVELS_KEY,
];

/// Is `key` one of the documents the engine applies?
pub fn is_engine_document(key: &str) -> bool {
    ENGINE_DOCUMENTS.contains(&key)
}

/// The compiled validators, built once (the schemas are part of the binary: a schema that does
/// not compile is a build defect, caught by the unit tests).
fn validators() -> &'static BTreeMap<&'static str, jsonschema::Validator> {
    static VALIDATORS: OnceLock<BTreeMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        SCHEMAS
            .iter()
            .map(|(key, text)| {
                let schema: Value = serde_json::from_str(text).expect("schema file is JSON");
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .build(&schema)
                    .expect("schema compiles");
                (*key, validator)
            })
            .collect()
    })
}

/// A document the engine applies, typed (the schema has passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Risk(Risk),
    Symbols(BTreeSet<String>),
    TradingState(TradingStateDoc),
    /// The engine's level, if the document names one.
    LogLevels(Option<String>),
    /// A valid document of the client's (client, routing): nothing for the engine.
    Client,
}

/// The risk document in fixed point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Risk {
    pub max_order_notional: Option<i64>,
    /// Per symbol: (max_order_qty, reference_price), each optional.
    pub symbols: BTreeMap<String, (Option<i64>, Option<i64>)>,
}

/// A trading state: venue-wide, one symbol's or one account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trading {
    #[default]
    Active,
    ReduceOnly,
    Halted,
}

impl Trading {
    pub fn name(self) -> &'static str {
        match self {
            Trading::Active => "ACTIVE",
            Trading::ReduceOnly => "REDUCE_ONLY",
            Trading::Halted => "HALTED",
        }
    }
}

/// The trading_state document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TradingStateDoc {
    pub state: Trading,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub symbols: BTreeMap<String, Trading>,
    /// Per-account states (contract 1.1): the per-account kill switch.
    #[serde(default)]
    pub accounts: BTreeMap<String, Trading>,
}

#[derive(Deserialize)]
struct RiskWire {
    max_order_notional: Option<String>,
    #[serde(default)]
    symbols: BTreeMap<String, RiskSymbolWire>,
}

#[derive(Deserialize)]
struct RiskSymbolWire {
    max_order_qty: Option<String>,
    reference_price: Option<String>,
}

#[derive(Deserialize)]
struct SymbolsWire {
    enabled: Vec<String>,
}

#[derive(Deserialize)]
struct LogLevelsWire {
    engine: Option<String>,
}

/// Parses and validates the body of `key` against its schema: the JSON value and the typed
/// document, or every error (sorted by field, then rule).
pub fn parse(key: &str, body: &[u8]) -> Result<(Value, Document), Vec<FieldError>> {
    let Some(validator) = validators().get(key) else {
        return Err(vec![field_error(
            WHOLE,
            "unknown_document",
            format!("no schema for a document {:?}", crate::validate::echo(key)),
        )]);
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| vec![field_error(WHOLE, "json", format!("not JSON: {e}"))])?;
    let mut errors: Vec<FieldError> = Vec::new();
    for error in validator.iter_errors(&value) {
        let path: Vec<String> = error
            .instance_path()
            .segments()
            .map(|s| match s {
                LocationSegment::Property(p) => p.to_string(),
                LocationSegment::Index(i) => i.to_string(),
            })
            .collect();
        let rule = error.kind().keyword().to_string();
        let message = error.to_string();
        let join = |last: &str| {
            let mut p = path.clone();
            p.push(last.to_string());
            p.join(".")
        };
        match error.kind() {
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_string);
                errors.push(field_error(&join(&name), &rule, message));
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    errors.push(field_error(&join(name), &rule, message.clone()));
                }
            }
            _ => errors.push(field_error(&path.join("."), &rule, message)),
        }
    }
    if !errors.is_empty() {
        // A value of the wrong type fails its other keywords by consequence (e.g. `not` of a
        // string pattern on a number): its `type` error alone is reported (the vector's rule).
        let mistyped: BTreeSet<String> = errors
            .iter()
            .filter(|e| e.rule == "type")
            .map(|e| e.field.clone())
            .collect();
        errors.retain(|e| e.rule == "type" || !mistyped.contains(&e.field));
        errors.sort_by(|a, b| (&a.field, &a.rule).cmp(&(&b.field, &b.rule)));
        errors.dedup_by(|a, b| a.field == b.field && a.rule == b.rule);
        return Err(errors);
    }
    let typed = typed(key, &value).map_err(|e| vec![field_error(WHOLE, "typed", e)])?;
    Ok((value, typed))
}

/// The typed document of a value that passed its schema.
fn typed(key: &str, value: &Value) -> Result<Document, String> {
    let de = |e: serde_json::Error| e.to_string();
    let amount = |s: &Option<String>| -> Result<Option<i64>, String> {
        s.as_deref()
            .map(|s| fixed::parse(s).map_err(|e| format!("{s:?}: {e}")))
            .transpose()
    };
    Ok(match key {
        contract::CONFIG_RISK_KEY => {
            let wire: RiskWire = serde_json::from_value(value.clone()).map_err(de)?;
            let mut symbols = BTreeMap::new();
            for (symbol, s) in wire.symbols {
                symbols.insert(
                    symbol,
                    (amount(&s.max_order_qty)?, amount(&s.reference_price)?),
                );
            }
            Document::Risk(Risk {
                max_order_notional: amount(&wire.max_order_notional)?,
                symbols,
            })
        }
        contract::CONFIG_SYMBOLS_KEY => {
            let wire: SymbolsWire = serde_json::from_value(value.clone()).map_err(de)?;
            Document::Symbols(wire.enabled.into_iter().collect())
        }
        contract::CONFIG_TRADING_STATE_KEY => {
            Document::TradingState(serde_json::from_value(value.clone()).map_err(de)?)
        }
        contract::CONFIG_LOG_LEVELS_KEY => {
            let wire: LogLevelsWire = serde_json::from_value(value.clone()).map_err(de)?;
            Document::LogLevels(wire.engine)
        }
        _ => Document::Client,
    })
}

/// The engine's own checks of a schema-valid document: every symbol it names must be one the
/// engine has a book for (`configured`).
pub fn check_symbols(doc: &Document, configured: &BTreeSet<String>) -> Vec<FieldError> {
    let unknown = |field: String, symbol: &str| {
        field_error(
            &field,
            "known_symbol",
            format!(
                "{} is not a symbol of this engine's configuration",
                crate::validate::echo(symbol)
            ),
        )
    };
    match doc {
        Document::Risk(r) => r
            .symbols
            .keys()
            .filter(|s| !configured.contains(*s))
            .map(|s| unknown(format!("symbols.{s}"), s))
            .collect(),
        Document::TradingState(t) => t
            .symbols
            .keys()
            .filter(|s| !configured.contains(*s))
            .map(|s| unknown(format!("symbols.{s}"), s))
            .collect(),
        // Its order is the document's: index the array as written.
        Document::Symbols(_) | Document::LogLevels(_) | Document::Client => Vec::new(),
    }
}

/// `check_symbols` for the symbols document, whose errors name the array index.
pub fn check_enabled(value: &Value, configured: &BTreeSet<String>) -> Vec<FieldError> {
    let Some(list) = value.get("enabled").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let s = s.as_str()?;
            (!configured.contains(s)).then(|| {
                field_error(
                    &format!("enabled.{i}"),
                    "known_symbol",
                    format!(
                        "{} is not a symbol of this engine's configuration",
                        crate::validate::echo(s)
                    ),
                )
            })
        })
        .collect()
}

/// What changed from `old` to `new` (either may be absent), one entry per leaf path:
/// `path: old -> new` (`-` = absent). Arrays compare whole.
pub fn diff(old: Option<&Value>, new: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
    let show = |v: Option<&Value>| v.map_or_else(|| "-".to_string(), Value::to_string);
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Object(a)), None) | (None, Some(Value::Object(a))) if !a.is_empty() => {
            let removed = old.is_some();
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if removed {
                    walk(&p, Some(v), None, out);
                } else {
                    walk(&p, None, Some(v), out);
                }
            }
        }
        (a, b) if a != b => out.push(format!("{}: {} -> {}", path, show(a), show(b))),
        _ => {}
    }
}
