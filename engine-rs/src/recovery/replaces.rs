//! Recovery of replaces (contract 1.1; see [`crate::alias`]): after the books are restored,
//! each replace taken in but not settled before the restart is applied now or settled, and a
//! replace's record missing behind a replaced order is recreated. A replace is never applied
//! twice: only one whose order has not changed since it was taken in is applied.

use tracing::{info, warn};

use crate::alias::{self, Pending};
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::order::LiveOrder;
use crate::store::Created;
use crate::trace::Trace;

impl Engine {
    /// Applies or settles every pending replace (`pending`: their records, in any order).
    pub(super) async fn recover_replaces(
        &mut self,
        mut pending: Vec<LiveOrder>,
    ) -> Result<(), EngineError> {
        pending.sort_by_key(|a| a.record.seq);
        for mut replace in pending {
            let account = replace.order().account.clone();
            let key = contract::order_key(&account, &replace.record.alias_of);
            let (order, open) = match self.venue.open_order(&key) {
                Some(o) => (Some(o.clone()), true),
                None => (
                    self.store
                        .load(&key)
                        .await?
                        .map(|(r, _)| LiveOrder::from_record(key.clone(), r)),
                    false,
                ),
            };
            let state = order.as_ref().map_or(Pending::TooLate, |o| {
                alias::pending_state(&replace.record, o, open)
            });
            info!(key = %replace.key, order = %key, state = ?state, "replace taken in before the restart");
            match state {
                Pending::Unapplied => {
                    let trace = Trace::recovered(&replace.record.correlation_id);
                    self.apply_replace(replace, &trace).await?;
                }
                Pending::Applied => {
                    alias::settle(&mut replace.record, order.as_ref(), now_ns());
                    self.write_back(vec![replace]).await?;
                }
                Pending::TooLate => {
                    alias::settle(&mut replace.record, None, now_ns());
                    self.write_back(vec![replace]).await?;
                }
            }
        }
        Ok(())
    }

    /// Creates the missing record of each order's latest replace (applied: its REPLACED report
    /// is stored), so that the replace's id stays taken and a re-sent copy is a duplicate.
    pub(super) async fn recreate_aliases(
        &mut self,
        orders: Vec<LiveOrder>,
    ) -> Result<(), EngineError> {
        for order in orders {
            let seq = self.next_seq();
            let (key, record) = alias::recreated(&order, &self.cfg.engine_id, seq, now_ns());
            match self.store.create(&key, &record).await? {
                Created::Written(_) => {
                    warn!(key, order = %order.key, "a replace's record was missing behind its REPLACED report: recreated");
                }
                Created::Exists => {}
                Created::Refused(why) => {
                    warn!(key, error = %why, "a replace's missing record could not be recreated");
                }
            }
        }
        self.commit_created().await
    }
}
