//! Applying the watch's revisions to the engine, in the run loop between commands (never in
//! the middle of an order): check the signer, validate, put in force (limits, enabled symbols,
//! trading state, log level), then say so: one `ConfigApplied` on `config_applied("engine")`
//! (core NATS: nothing waits on it), one log line (document, revision, signer, the diff from
//! the previous version; WARN when refused, saying the previous configuration stays), and the
//! metrics (revision in force per document, refusals).
//!
//! Start-up: the watch delivers every kept revision of every key (the bucket's history), and
//! each is applied in order without a word until the watch has caught up; then the last
//! revision of each key is reported. So a refused last revision leaves the last good one in
//! force after a restart too, as it did before it.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use async_nats::Client;
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::documents::is_engine_document;
use super::in_force::{Applied, InForce};
use super::signer;
use super::watch::{Entry, Event};
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::limits::Limits;
use crate::logging;
use crate::proto::v1::{self as pb, ConfigApplied, FieldError};
use crate::validate::{Rejection, Validator};
use crate::venue::LiveOrder;

/// The side this engine reports as.
const SIDE: &str = "engine";

/// What became of one revision.
#[derive(Debug, Clone)]
struct Outcome {
    revision: u64,
    signer: String,
    errors: Vec<FieldError>,
}

/// The engine's runtime configuration: what is in force, and how to say what happened.
pub struct RuntimeConfig {
    pub in_force: InForce,
    client: Client,
    engine_id: String,
    /// Until the watch caught up: the last outcome per document, reported then.
    held: Option<BTreeMap<String, Outcome>>,
}

impl RuntimeConfig {
    pub fn new(file: Limits, client: Client, engine_id: String) -> RuntimeConfig {
        RuntimeConfig {
            in_force: InForce::new(file),
            client,
            engine_id,
            held: Some(BTreeMap::new()),
        }
    }

    /// Has the watch delivered everything the bucket held at start-up?
    pub fn caught_up(&self) -> bool {
        self.held.is_none()
    }
}

impl Engine {
    /// Applies one event of the config watch. Never fails: a revision is applied or refused.
    pub async fn on_config(&mut self, event: Event) {
        match event {
            Event::Entry(entry) => self.on_revision(entry).await,
            Event::CaughtUp => {
                let Some(held) = self.runtime.held.take() else {
                    return;
                };
                for (document, outcome) in held {
                    self.report(&document, &outcome, None).await;
                }
                info!(
                    trading_state = self.runtime.in_force.trading.venue.name(),
                    "runtime configuration loaded"
                );
            }
        }
    }

    async fn on_revision(&mut self, entry: Entry) {
        if !is_engine_document(&entry.key) {
            return;
        }
        let entitlements = self.auth.as_ref().map(|a| a.entitlements());
        let signed = signer::check(
            &entry.subject,
            &entry.payload,
            entry.headers.as_ref(),
            entitlements,
        );
        let (signer, checked) = match signed {
            Err(e) => (signer::UNSIGNED.to_string(), Err(vec![e])),
            Ok(signer) => {
                let checked = match entry.operation {
                    Operation::Put => self
                        .runtime
                        .in_force
                        .check(&entry.key, &entry.payload)
                        .map(Some),
                    // Deleted or purged: the file's values are back.
                    Operation::Delete | Operation::Purge => Ok(None),
                };
                (signer, checked)
            }
        };
        let outcome = match checked {
            Ok(valid) => {
                let applied = valid.map(|(value, doc)| Applied {
                    revision: entry.revision,
                    value,
                    doc,
                    signer: signer.clone(),
                });
                let change = self.runtime.in_force.install(&entry.key, applied);
                self.limits = self.runtime.in_force.limits.clone();
                for (symbol, price) in &self.streamed_prices {
                    if let Some(limits) = self.limits.symbols.get_mut(symbol) {
                        limits.reference_price = *price;
                    }
                }
                if let Some(level) = &change.log_level {
                    if let Err(e) = logging::set_level(level.as_deref()) {
                        warn!(error = %e, "log level not changed");
                    }
                }
                let outcome = Outcome {
                    revision: entry.revision,
                    signer,
                    errors: Vec::new(),
                };
                if self.runtime.held.is_none() {
                    self.report(&entry.key, &outcome, Some(change.diff)).await;
                }
                outcome
            }
            Err(errors) => {
                let outcome = Outcome {
                    revision: entry.revision,
                    signer,
                    errors,
                };
                if self.runtime.held.is_none() {
                    self.report(&entry.key, &outcome, None).await;
                }
                outcome
            }
        };
        if let Some(held) = self.runtime.held.as_mut() {
            held.insert(entry.key, outcome);
        }
    }

    /// Publishes, logs and counts one outcome. `diff`: the change it made (None: from the
    /// file's configuration to what is in force, for the revisions reported after start-up).
    async fn report(&self, document: &str, outcome: &Outcome, diff: Option<Vec<String>>) {
        let applied = outcome.errors.is_empty();
        let msg = ConfigApplied {
            side: SIDE.into(),
            instance: self.runtime.engine_id.clone(),
            document: document.into(),
            revision: outcome.revision,
            applied,
            errors: outcome.errors.clone(),
            applied_unix_ns: now_ns(),
        };
        let subject = contract::config_applied(SIDE);
        if let Err(e) = self
            .runtime
            .client
            .publish(subject, Bytes::from(msg.encode_to_vec()))
            .await
        {
            warn!(error = %e, document, "ConfigApplied not published");
        }
        let in_force = self.runtime.in_force.document(document);
        let revision = outcome.revision;
        let signer = outcome.signer.as_str();
        if applied {
            let diff =
                diff.unwrap_or_else(|| super::documents::diff(None, in_force.map(|a| &a.value)));
            self.metrics.config.applied(document, revision);
            info!(
                document,
                revision,
                signer,
                diff = diff.join("; "),
                "config applied"
            );
        } else {
            self.metrics.config.refused(document);
            let errors: Vec<String> = outcome
                .errors
                .iter()
                .map(|e| format!("{}: {} [{}]", e.field, e.message, e.rule))
                .collect();
            warn!(
                document,
                revision,
                signer,
                errors = errors.join("; "),
                in_force_revision = in_force.map_or(0, |a| a.revision),
                "config refused: the previous configuration stays in force"
            );
        }
    }
}

impl Engine {
    /// The kill switch's verdict on a new order that passes every other check (`None`: take
    /// it). Free while the order's symbol and account are ACTIVE: nothing is computed.
    pub(crate) fn trading_gate(
        &self,
        validator: &Validator<'_>,
        order: &pb::NewOrder,
        now: i64,
    ) -> Option<Rejection> {
        let in_force = &self.runtime.in_force;
        if !in_force.trading.restricts(&order.account, &order.symbol) {
            return None;
        }
        // An order that fails a check is refused by that check, as when trading is ACTIVE.
        let valid = validator.check(order, now).ok()?;
        let position = in_force.positions.of(&order.account, &order.symbol);
        let resting = || {
            self.venue
                .resting()
                .filter(|o| {
                    let o = o.order();
                    o.account == order.account && o.symbol == order.symbol && o.side == order.side
                })
                .map(LiveOrder::leaves)
                .sum()
        };
        in_force
            .trading
            .admit(order, valid.side, valid.qty, position, resting)
            .err()
    }
}

impl Engine {
    /// Start-up: applies the watch's events until it has delivered what the bucket holds, for
    /// at most `within` (then the engine serves on what it has, and the rest applies as it
    /// comes, between commands).
    pub async fn load_config(&mut self, events: &mut mpsc::Receiver<Event>, within: Duration) {
        let deadline = tokio::time::sleep(within);
        tokio::pin!(deadline);
        while !self.runtime.caught_up() {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_config(event).await,
                    None => break,
                },
                () = &mut deadline => {
                    warn!(within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX), "runtime configuration not loaded in time: serving on the file's configuration until the config watch delivers it");
                    break;
                }
            }
        }
    }
}
