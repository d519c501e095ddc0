//! Start-up recovery: the book after a restart is the book before it.
//!
//! 1. Every open record this engine owns is read from the journal (KV) and brought up to the
//!    last report EXECUTIONS holds for it (a crash can fall between an execution's atomic
//!    report batch and its record updates; the batch is the fact, `publish.rs`).
//! 2. Each NEW / PARTIALLY_FILLED order is put back into its book WITHOUT matching, in arrival
//!    sequence, so every level has its original time priority and nothing trades or is
//!    reported. Seeded liquidity is orders of the house (`house.rs`), so what was consumed
//!    stays consumed and unconsumed seed keeps its place.
//! 3. Orders that cannot be put back (their symbol is gone, a market remainder) are finished
//!    with CANCELED / RECOVERY_INVALID and an ERROR line; resting orders past their deadline
//!    expire, exactly as they would have at their next touch. No order is left neither in a
//!    book nor final.
//! 4. Seed orders of this `seed_generation` that were never placed are placed (a first start);
//!    live house orders of other generations are canceled.
//! 5. Orders still PENDING_NEW (acknowledged, never executed: the crash came first) execute
//!    now, against the restored book, under the limits they were accepted with; only their
//!    deadline is checked again.

use std::collections::{BTreeMap, HashSet};

use async_nats::jetstream::kv;
use backon::Retryable;
use futures::StreamExt;
use prost::Message as _;
use tracing::{error, info};

use super::publish::Tagged;
use super::{now_ns, Created, Engine, ServiceError};
use crate::config::SymbolLimits;
use crate::fixed;
use crate::house;
use crate::proto::state::OrderRecord;
use crate::proto::v1::{self as pb, OrderStatus, RejectReason};
use crate::validate::Validator;
use crate::venue::{is_final, LiveOrder, Touched, Venue};

impl Engine {
    /// Restores this engine's open orders and its books after a restart (see the module docs);
    /// returns how many client orders were restored or executed (the house's are logged).
    pub async fn recover(&mut self) -> Result<usize, ServiceError> {
        let (mine, keys) = self.load_records().await?;
        let now = now_ns();
        let mut restored = 0; // client orders; the house's are counted apart
        let mut house_restored = 0;
        let mut pending = Vec::new();
        let mut writes: Vec<LiveOrder> = Vec::new();
        let mut finished: Vec<Touched> = Vec::new();
        for mut live in mine {
            self.last_seq = self.last_seq.max(live.record.seq);
            let before = live.report_seq;
            self.adopt_stored_report(&mut live).await?;
            let st = live.status();
            if is_final(st) {
                writes.push(live); // its last report was stored; only the record lagged
            } else if st == OrderStatus::PendingNew {
                pending.push(live);
            } else if house::is_other_generation(
                live.order(),
                &self.cfg.engine_id,
                &self.cfg.seed_generation,
            ) {
                let text = "house liquidity of a replaced seed_generation";
                finished.push(Venue::abandon(live, RejectReason::Unspecified, text, now)?);
            } else {
                let adopted = live.report_seq != before;
                let house = house::is_house_key(&live.key);
                match self.venue.restore(live.clone()) {
                    Ok(()) => {
                        restored += usize::from(!house);
                        house_restored += usize::from(house);
                        if adopted {
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
        finished.extend(self.venue.expire_due(None, now)?);
        self.settle_recovered(finished, writes).await?;
        let placed = self.place_seed(&keys).await?;
        let executed = pending.len();
        for live in pending {
            self.execute_recovered(live).await?;
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

    /// Every non-final record owned by this engine, in arrival sequence, and every key of the
    /// journal (to tell which seed orders exist).
    ///
    /// A KV watch is a single-replica consumer the server may place on a replica still catching
    /// up (a node just restarted in a cluster): it would end its history early and recovery
    /// would miss orders. So the journal's last sequence is asked of its stream leader first,
    /// and a scan that ends below it is read again, under the retry policy.
    async fn load_records(&self) -> Result<(Vec<LiveOrder>, HashSet<String>), ServiceError> {
        let attempts = self.readiness.operation("read the journal", "recovery");
        let scanned = (|| self.scan_records())
            .retry(self.backoff())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        scanned
    }

    /// One complete scan of the journal, or an error if it ended before the leader's last
    /// sequence.
    async fn scan_records(&self) -> Result<(Vec<LiveOrder>, HashSet<String>), ServiceError> {
        let setup = |e: async_nats::Error| ServiceError::Setup {
            what: "journal scan",
            source: e,
        };
        let stream_name = format!("KV_{}", crate::subjects::ORDERS_KV_BUCKET);
        let stream = self
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| setup(e.into()))?;
        let last = stream.cached_info().state.last_sequence;
        let mut mine = Vec::new();
        let mut keys = HashSet::new();
        if stream.cached_info().state.messages == 0 {
            return Ok((mine, keys));
        }
        let mut watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| setup(e.into()))?;
        let mut seen = 0;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| setup(e.into()))?;
            seen = seen.max(entry.revision);
            if entry.operation == kv::Operation::Put {
                keys.insert(entry.key.clone());
                if let Ok(record) = OrderRecord::decode(entry.value.clone()) {
                    let st =
                        OrderStatus::try_from(record.status).unwrap_or(OrderStatus::Unspecified);
                    if record.engine_id == self.cfg.engine_id && !is_final(st) {
                        mine.push(LiveOrder::from_record(entry.key, record, entry.revision));
                    }
                }
            }
            if entry.delta == 0 {
                break;
            }
        }
        if seen < last {
            return Err(setup(
                format!("the journal scan ended at sequence {seen}, the leader has {last}: a lagging replica answered; reading again").into(),
            ));
        }
        mine.sort_by_key(|o| o.record.seq);
        Ok((mine, keys))
    }

    /// Brings `live` up to the last report EXECUTIONS holds for it (read from the stream
    /// leader), if that is newer than its record.
    async fn adopt_stored_report(&self, live: &mut LiveOrder) -> Result<(), ServiceError> {
        let order = live.order();
        let subject = crate::subjects::executions(&order.account, &order.client_order_id);
        let Some(report) = self.last_stored_report(&subject).await? else {
            return Ok(());
        };
        if report.seq > live.report_seq {
            let avg = report
                .avg_px
                .as_ref()
                .and_then(|d| fixed::from_decimal(d).ok())
                .unwrap_or(0);
            let cum = report
                .cum_qty
                .as_ref()
                .and_then(|d| fixed::from_decimal(d).ok())
                .unwrap_or(0);
            live.adopt(report, fixed::notional_e16(avg, cum));
        }
        Ok(())
    }

    /// Publishes what recovery finished (each order its own fact) and writes the records.
    async fn settle_recovered(
        &mut self,
        finished: Vec<Touched>,
        mut writes: Vec<LiveOrder>,
    ) -> Result<(), ServiceError> {
        let groups: Vec<Vec<Tagged<'_>>> = finished
            .iter()
            .map(|t| {
                let cid = t.order.record.correlation_id.as_str();
                t.reports.iter().map(|r| (r, cid)).collect()
            })
            .collect();
        self.publish_groups(groups).await?;
        writes.extend(finished.into_iter().map(|t| t.order));
        self.journal(writes).await
    }

    /// Places the seed orders of this generation that the journal does not hold yet; returns
    /// how many.
    async fn place_seed(&mut self, keys: &HashSet<String>) -> Result<usize, ServiceError> {
        let seeds =
            house::seed_orders(&self.limits, &self.cfg.engine_id, &self.cfg.seed_generation)
                .map_err(|e| ServiceError::Seed(e.to_string()))?;
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
            match self.create(&live.key, &live.record).await? {
                Created::Written(revision) => live.revision = revision,
                // Placed by an earlier start whose record this one did not see: leave it.
                Created::Exists => continue,
                Created::Refused(why) => {
                    // The journal refuses it for good: the book goes without this order
                    // rather than the engine stopping.
                    error!(key = %live.key, reason = %why, "seed order not placed: its journal write is refused");
                    continue;
                }
            }
            self.execute(live, &seed.valid, "").await?;
            placed += 1;
        }
        Ok(placed)
    }

    /// Executes an order that was acknowledged but never executed, under the limits it was
    /// accepted with (only its deadline and its book are checked again).
    async fn execute_recovered(&mut self, live: LiveOrder) -> Result<(), ServiceError> {
        let relaxed: BTreeMap<String, SymbolLimits> = self
            .limits
            .iter()
            .map(|(s, l)| {
                let mut l = l.clone();
                l.max_order_qty = i64::MAX;
                (s.clone(), l)
            })
            .collect();
        let validator = Validator {
            symbols: &relaxed,
            max_notional: i64::MAX,
        };
        let cid = live.record.correlation_id.clone();
        match validator.check(live.order(), now_ns()) {
            Ok(valid) => self.execute(live, &valid, &cid).await,
            Err(rej) => {
                let reason = if rej.reason == RejectReason::DeadlineExceeded {
                    RejectReason::DeadlineExceeded
                } else {
                    error!(key = %live.key, reason = %rej.text(), "acknowledged order cannot execute after a restart: rejected (RECOVERY_INVALID)");
                    RejectReason::RecoveryInvalid
                };
                let touched = Venue::reject(live, reason, &rej.errors, &rej.text(), now_ns())?;
                self.settle_recovered(vec![touched], Vec::new()).await
            }
        }
    }
}
