//! The configuration in force (pure): the file's limits, the documents applied over them (each
//! with its revision and signer), and what they make: the effective limits, the trading state,
//! the engine's log level. A revision either replaces its document whole or is refused and
//! changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::documents::{self, Document};
use super::state::{Positions, TradingState};
use crate::contract;
use crate::limits::Limits;
use crate::proto::v1::FieldError;

/// One document in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub revision: u64,
    pub value: Value,
    pub doc: Document,
    pub signer: String,
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct InForce {
    file: Limits,
    configured: BTreeSet<String>,
    docs: BTreeMap<String, Applied>,
    /// Effective limits: the file's, with the risk document over them, less the symbols the
    /// symbols document leaves out.
    pub limits: Limits,
    pub trading: TradingState,
    /// The engine's level from log_levels (None: the start-up filter).
    pub log_level: Option<String>,
    pub positions: Positions,
}

/// What applying a revision did.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `path: old -> new` entries.
    pub diff: Vec<String>,
    /// The log level changed (to this; None = back to the start-up filter).
    pub log_level: Option<Option<String>>,
}

impl InForce {
    /// The file's configuration, no document applied.
    pub fn new(file: Limits) -> InForce {
        InForce {
            configured: file.symbols.keys().cloned().collect(),
            limits: file.clone(),
            file,
            docs: BTreeMap::new(),
            trading: TradingState::default(),
            log_level: None,
            positions: Positions::default(),
        }
    }

    /// The document `key` in force, if any.
    pub fn document(&self, key: &str) -> Option<&Applied> {
        self.docs.get(key)
    }

    /// Validates a revision of `key` (schema, then the engine's checks).
    pub fn check(&self, key: &str, body: &[u8]) -> Result<(Value, Document), Vec<FieldError>> {
        let (value, doc) = documents::parse(key, body)?;
        let mut errors = documents::check_symbols(&doc, &self.configured);
        if matches!(doc, Document::Symbols(_)) {
            errors.extend(documents::check_enabled(&value, &self.configured));
        }
        if errors.is_empty() {
            Ok((value, doc))
        } else {
            Err(errors)
        }
    }

    /// Puts a checked revision in force (or, `None`, removes the document: deleted or purged).
    pub fn install(&mut self, key: &str, applied: Option<Applied>) -> Change {
        let old = self.docs.get(key).map(|a| a.value.clone());
        let new = applied.as_ref().map(|a| a.value.clone());
        match applied {
            Some(a) => self.docs.insert(key.to_string(), a),
            None => self.docs.remove(key),
        };
        let level_before = self.log_level.clone();
        self.recompute();
        Change {
            diff: documents::diff(old.as_ref(), new.as_ref()),
            log_level: (self.log_level != level_before).then(|| self.log_level.clone()),
        }
    }

    fn doc(&self, key: &str) -> Option<&Document> {
        self.docs.get(key).map(|a| &a.doc)
    }

    fn recompute(&mut self) {
        let mut limits = self.file.clone();
        if let Some(Document::Risk(risk)) = self.doc(contract::CONFIG_RISK_KEY) {
            if let Some(n) = risk.max_order_notional {
                limits.max_notional = n;
            }
            for (symbol, (qty, price)) in &risk.symbols {
                if let Some(l) = limits.symbols.get_mut(symbol) {
                    if let Some(q) = qty {
                        l.max_order_qty = *q;
                    }
                    if let Some(p) = price {
                        l.reference_price = *p;
                    }
                }
            }
        }
        if let Some(Document::Symbols(enabled)) = self.doc(contract::CONFIG_SYMBOLS_KEY) {
            limits.symbols.retain(|s, _| enabled.contains(s));
        }
        self.limits = limits;
        self.trading = match self.doc(contract::CONFIG_TRADING_STATE_KEY) {
            Some(Document::TradingState(t)) => TradingState::from_doc(t),
            _ => TradingState::default(),
        };
        self.log_level = match self.doc(contract::CONFIG_LOG_LEVELS_KEY) {
            Some(Document::LogLevels(level)) => level.clone(),
            _ => None,
        };
    }
}
