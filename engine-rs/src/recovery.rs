//! Start-up recovery: the book after a restart is the book before it.
//!
//! 1. Every open record this engine owns is read from the order store (KV) and brought up to
//!    the last report EXECUTIONS holds for it (a crash can fall between an execution's atomic
//!    report batch and its record updates; the batch is the fact, `publish.rs`).
//! 2. Each NEW / PARTIALLY_FILLED order is put back into its book WITHOUT matching, in arrival
//!    sequence, so every level has its original time priority and nothing trades or is
//!    reported. Seeded liquidity is orders of the house (`house.rs`), so what was consumed
//!    stays consumed and unconsumed seed keeps its place.
//! 3. Orders that cannot be put back (their symbol is gone, a market remainder) are finished
//!    with CANCELED / RECOVERY_INVALID and an ERROR line; resting orders past their expiry (a
//!    deadline, a DAY session end: `venue/expiry.rs`) expire at once, and the engine's timer
//!    expires the others on time. No order is left neither in a book nor final.
//! 4. Seed orders of this `seed_generation` that were never placed are placed (a first start);
//!    live house orders of other generations are canceled.
//! 5. Orders still PENDING_NEW (acknowledged, never executed: the crash came first) execute
//!    now, against the restored book, under the limits they were accepted with; only their
//!    deadline is checked again.
//!
//!
//! Replaces (contract 1.1): the last stored report also gives a replaced order its terms and
//! ids (a crash between a replace's report batch and its record update); an order whose
//! adopted replace lost its time priority takes a new arrival sequence, after every other
//! order, as the replace gave it. Every replaced order's original id is noted before anything
//! is published (its reports' subject, `publish/subjects.rs`). Then, before the pending
//! orders execute, each replace taken in but not settled is applied or settled
//! (`recovery/replaces.rs`), and a replace's record missing behind a REPLACED report is
//! recreated.
//!
//! What happens to each record is decided by [`crate::reconcile`] (pure).

use std::collections::HashSet;

use tracing::{error, info, Instrument};

use crate::commands::order_span;
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::house;
use crate::limits::Limits;
use crate::proto::v1::{self as pb, OrderStatus, RejectReason};
use crate::publish::Tagged;
use crate::reconcile::{
    adopt_report, last_states, loses_priority, reconcile, recovered_rejection, Reconcile,
};
use crate::store::Created;
use crate::trace::Trace;
use crate::venue::{LiveOrder, Touched, Venue};

mod replaces;

impl Engine {
    /// Restores this engine's open orders and its books after a restart (see the module docs);
    /// returns how many client orders were restored or executed (the house's are logged).
    pub async fn recover(&mut self) -> Result<usize, EngineError> {
        let (mine, keys) = self.store.open_records(&self.cfg.engine_id).await?;
        let now = now_ns();
        let mut restored = 0; // client orders; the house's are counted apart
        let mut house_restored = 0;
        let mut pending = Vec::new();
        let mut writes: Vec<LiveOrder> = Vec::new();
        let mut finished: Vec<Touched> = Vec::new();
        let (replaces, mine): (Vec<LiveOrder>, Vec<LiveOrder>) = mine
            .into_iter()
            .partition(|l| !l.record.alias_of.is_empty());
        let max_seq = mine.iter().chain(&replaces).map(|l| l.record.seq).max();
        self.last_seq = self.last_seq.max(max_seq.unwrap_or(0));
        let mut adopted_orders = Vec::with_capacity(mine.len());
        let mut missing_aliases = Vec::new();
        for mut live in mine {
            let order = live.order();
            let subject = contract::executions(&order.account, &order.client_order_id);
            let stored = self.reports.last_stored(&subject).await?;
            let before = live.terms();
            let adopted = adopt_report(&mut live, stored);
            if adopted && loses_priority(before, live.terms()) {
                live.record.seq = self.next_seq();
            }
            if !live.record.current_client_order_id.is_empty() {
                let original = &live.order().client_order_id;
                self.reports
                    .originals
                    .note(&live.record.engine_order_id, original);
                let alias_key = contract::order_key(
                    &live.order().account,
                    &live.record.current_client_order_id,
                );
                if !keys.contains(&alias_key) {
                    missing_aliases.push(live.clone());
                }
            }
            adopted_orders.push((live, adopted));
        }
        // Arrival sequence, replaces that lost their priority included.
        adopted_orders.sort_by_key(|(l, _)| l.record.seq);
        for (live, adopted) in adopted_orders {
            match reconcile(
                &live,
                adopted,
                &self.cfg.engine_id,
                &self.cfg.seed_generation,
            ) {
                Reconcile::Write => writes.push(live),
                Reconcile::Execute => pending.push(live),
                Reconcile::Retire(text) => {
                    finished.push(Venue::abandon(live, RejectReason::Unspecified, text, now)?);
                }
                Reconcile::Restore { write } => {
                    let house = house::is_house_key(&live.key);
                    match self.venue.restore(live.clone()) {
                        Ok(()) => {
                            restored += usize::from(!house);
                            house_restored += usize::from(house);
                            if write {
                                writes.push(live);
                            }
                        }
                        Err(why) => {
                            error!(key = %live.key, reason = %why, "open order cannot be restored into a book: canceled (RECOVERY_INVALID)");
                            let why = why.to_string();
                            finished.push(Venue::abandon(
                                live,
                                RejectReason::RecoveryInvalid,
                                &why,
                                now,
                            )?);
                        }
                    }
                }
            }
        }
        finished.extend(self.venue.expire_due(None, now)?);
        self.settle_recovered(finished, writes).await?;
        self.recreate_aliases(missing_aliases).await?;
        self.recover_replaces(replaces).await?;
        let placed = self.place_seed(&keys).await?;
        let executed = pending.len();
        // Acknowledged orders execute under the limits they were accepted with.
        let relaxed = self.limits.relaxed();
        for live in pending {
            self.execute_recovered(live, &relaxed).await?;
        }
        info!(
            restored,
            executed,
            house_restored,
            house_placed = placed,
            resting = self.venue.open_orders(),
            "recovery done: books restored without matching"
        );
        Ok(restored + executed)
    }

    /// Commits what recovery finished (each order its own fact) and the records.
    async fn settle_recovered(
        &mut self,
        finished: Vec<Touched>,
        mut writes: Vec<LiveOrder>,
    ) -> Result<(), EngineError> {
        let traces: Vec<Trace> = finished
            .iter()
            .map(|t| Trace::recovered(&t.order.record.correlation_id))
            .collect();
        let groups: Vec<Vec<Tagged<'_>>> = finished
            .iter()
            .zip(&traces)
            .map(|(t, trace)| t.reports.iter().map(|r| (r, trace)).collect())
            .collect();
        writes.extend(finished.iter().map(|t| t.order.clone()));
        let writes = last_states(writes);
        self.commit(groups, writes.iter().collect()).await
    }

    /// Places the seed orders of this generation that the order store does not hold yet;
    /// returns how many.
    async fn place_seed(&mut self, keys: &HashSet<String>) -> Result<usize, EngineError> {
        let seeds = house::seed_orders(
            &self.limits.symbols,
            &self.cfg.engine_id,
            &self.cfg.seed_generation,
        )?;
        let mut placed = 0;
        for seed in seeds.into_iter().filter(|s| !keys.contains(&s.key)) {
            let seq = self.next_seq();
            let mut live = LiveOrder::new(seed.key, seed.order, &self.cfg.engine_id, seq, "");
            live.record.ack = Some(pb::OrderAck {
                client_order_id: live.order().client_order_id.clone(),
                account: house::HOUSE_ACCOUNT.into(),
                engine_order_id: live.record.engine_order_id.clone(),
                status: pb::AckStatus::Accepted as i32,
                order_status: OrderStatus::PendingNew as i32,
                engine_id: self.cfg.engine_id.clone(),
                text: "seeded liquidity".into(),
                ..Default::default()
            });
            match self.store.create(&live.key, &live.record).await? {
                Created::Written(_) => {}
                // Placed by an earlier start whose record this one did not see: leave it.
                Created::Exists => continue,
                Created::Refused(why) => {
                    // The order store refuses it for good: the book goes without this order
                    // rather than the engine stopping.
                    error!(key = %live.key, reason = %why, "seed order not placed: its record is refused by the order store");
                    continue;
                }
            }
            // The engine's own order: a trace of its own (correlation id = trace id).
            let trace = Trace::recovered(&live.record.correlation_id);
            self.execute(live, &seed.valid, &trace).await?;
            placed += 1;
        }
        Ok(placed)
    }

    /// Executes an order that was acknowledged but never executed, under the limits it was
    /// accepted with (`relaxed`: only its deadline and its book are checked again).
    async fn execute_recovered(
        &mut self,
        live: LiveOrder,
        relaxed: &Limits,
    ) -> Result<(), EngineError> {
        let trace = Trace::recovered(&live.record.correlation_id);
        let order = live.order();
        let span = order_span(&trace, &order.account, &order.client_order_id);
        async {
            match relaxed.validator().check(live.order(), now_ns()) {
                Ok(valid) => self.execute(live, &valid, &trace).await,
                Err(rej) => {
                    let reason = recovered_rejection(&rej);
                    if reason == RejectReason::RecoveryInvalid {
                        error!(key = %live.key, reason = %rej.text(), "acknowledged order cannot execute after a restart: rejected (RECOVERY_INVALID)");
                    }
                    let touched = Venue::reject(live, reason, &rej.errors, &rej.text(), now_ns())?;
                    self.settle_recovered(vec![touched], Vec::new()).await
                }
            }
        }
        .instrument(span)
        .await
    }
}
