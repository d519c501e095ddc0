//! The kill switch (pure): the trading state in force, venue-wide, per symbol and per account,
//! and the position ledger REDUCE_ONLY is judged by.
//!
//! - ACTIVE: orders are taken as usual.
//! - HALTED: every new order is refused (TRADING_HALTED). Cancels, mass cancels and status
//!   queries always work: they are never checked here.
//! - REDUCE_ONLY: a new order is taken only if it reduces the account's position in the
//!   symbol: opposite side, and its quantity plus the account's resting orders on that side in
//!   that symbol at most the position's size (REDUCE_ONLY otherwise). So the orders taken can
//!   never, all filled, flip or grow the position.
//!
//! Positions are what this engine's fills since it started add up to, per (account, symbol):
//! after a restart the ledger starts at zero, which under REDUCE_ONLY refuses more orders,
//! never fewer (nothing reduces a position of zero). A symbol's own entry overrides the
//! venue-wide state; an account's entry (the per-account kill switch, contract 1.1) applies on
//! top of that: an order is judged by the strictest of its account's state and its symbol's
//! (HALTED over REDUCE_ONLY over ACTIVE; on a tie, the symbol's, whose text names the symbol).

use std::collections::{BTreeMap, HashMap};

use super::documents::{Trading, TradingStateDoc};
use crate::book::Side;
use crate::fixed;
use crate::proto::v1::{self as pb, ExecType, RejectReason};
use crate::validate::{echo, show, Rejection, RESERVED_ACCOUNT_PREFIX};
use crate::venue::Executed;

/// The trading state in force (ACTIVE everywhere without a document).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TradingState {
    pub venue: Trading,
    pub reason: String,
    pub symbols: BTreeMap<String, Trading>,
    /// Per account: its kill switch.
    pub accounts: BTreeMap<String, Trading>,
}

/// Which entry decided the state an order is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The symbol's own entry, or the venue's.
    Symbol,
    /// The account's entry.
    Account,
}

/// How strict a state is: HALTED > REDUCE_ONLY > ACTIVE.
fn strictness(t: Trading) -> u8 {
    match t {
        Trading::Active => 0,
        Trading::ReduceOnly => 1,
        Trading::Halted => 2,
    }
}

impl TradingState {
    pub fn from_doc(doc: &TradingStateDoc) -> TradingState {
        TradingState {
            venue: doc.state,
            reason: doc.reason.clone(),
            symbols: doc.symbols.clone(),
            accounts: doc.accounts.clone(),
        }
    }

    /// The state of `symbol`: its own entry, else the venue's.
    pub fn of(&self, symbol: &str) -> Trading {
        self.symbols.get(symbol).copied().unwrap_or(self.venue)
    }

    /// The state of `account`: its own entry, else ACTIVE.
    pub fn of_account(&self, account: &str) -> Trading {
        self.accounts.get(account).copied().unwrap_or_default()
    }

    /// The state an order of `account` in `symbol` is judged by, and where it comes from: the
    /// strictest of the two (the symbol's on a tie).
    fn judged(&self, account: &str, symbol: &str) -> (Trading, Scope) {
        let (by_symbol, by_account) = (self.of(symbol), self.of_account(account));
        if strictness(by_account) > strictness(by_symbol) {
            (by_account, Scope::Account)
        } else {
            (by_symbol, Scope::Symbol)
        }
    }

    /// Would an order of `account` in `symbol` be checked here? (ACTIVE for both: no, the
    /// order path skips it.)
    pub fn restricts(&self, account: &str, symbol: &str) -> bool {
        self.judged(account, symbol).0 != Trading::Active
    }

    /// May this order be taken? `position`: the account's signed position in the symbol;
    /// `resting`: the account's open quantity on the order's side in that symbol (asked only
    /// under REDUCE_ONLY).
    pub fn admit(
        &self,
        order: &pb::NewOrder,
        side: Side,
        qty: i64,
        position: i64,
        resting: impl FnOnce() -> i64,
    ) -> Result<(), Rejection> {
        let why = if self.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", echo(&self.reason))
        };
        let (state, scope) = self.judged(&order.account, &order.symbol);
        let (field, what) = match scope {
            Scope::Symbol => ("symbol", format!("trading in {}", echo(&order.symbol))),
            Scope::Account => ("account", format!("account {}", echo(&order.account))),
        };
        match state {
            Trading::Active => Ok(()),
            Trading::Halted => Err(Rejection::single(
                RejectReason::TradingHalted,
                field,
                "trading_halted",
                format!("{what} is HALTED{why}: no new orders"),
            )),
            Trading::ReduceOnly => {
                let reduces = match side {
                    Side::Buy => position < 0,
                    Side::Sell => position > 0,
                };
                let room = position.abs().saturating_sub(resting());
                if reduces && qty <= room {
                    return Ok(());
                }
                let what = match scope {
                    Scope::Symbol => echo(&order.symbol),
                    Scope::Account => format!("account {}", echo(&order.account)),
                };
                Err(Rejection::single(
                    RejectReason::ReduceOnly,
                    "quantity",
                    "reduce_only",
                    format!(
                        "{what} is REDUCE_ONLY{why}: the account's position in {} is {} (this \
                         engine's fills since it started) and {} more can reduce it; this {} of \
                         {} would not",
                        echo(&order.symbol),
                        show(position),
                        show(room.max(0)),
                        side.label(),
                        show(qty)
                    ),
                ))
            }
        }
    }
}

/// Signed positions (buys minus sells, fixed point) per (account, symbol), from fills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    by_key: HashMap<(String, String), i64>,
}

impl Positions {
    pub fn of(&self, account: &str, symbol: &str) -> i64 {
        self.by_key
            .get(&(account.to_string(), symbol.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Adds one fill.
    pub fn fill(&mut self, account: &str, symbol: &str, side: Side, qty: i64) {
        let p = self
            .by_key
            .entry((account.to_string(), symbol.to_string()))
            .or_insert(0);
        *p = match side {
            Side::Buy => p.saturating_add(qty),
            Side::Sell => p.saturating_sub(qty),
        };
    }

    /// Adds every fill of an execution (the venue's own accounts are not tracked).
    pub fn record(&mut self, executed: &Executed) {
        for report in executed
            .expired
            .iter()
            .chain(&executed.touched)
            .flat_map(|t| &t.reports)
        {
            if report.exec_type != ExecType::Trade as i32
                || report.account.starts_with(RESERVED_ACCOUNT_PREFIX)
            {
                continue;
            }
            let side = match pb::Side::try_from(report.side) {
                Ok(pb::Side::Buy) => Side::Buy,
                Ok(pb::Side::Sell) => Side::Sell,
                _ => continue,
            };
            if let Some(Ok(qty)) = report.last_qty.as_ref().map(fixed::from_decimal) {
                self.fill(&report.account, &report.symbol, side, qty);
            }
        }
    }
}
