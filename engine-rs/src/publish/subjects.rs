//! Which subject an execution report is published on: `bridge.v1.exec.<account>.<id>`, where
//! `<id>` is the order's ORIGINAL client order id for its whole life (contract.toml,
//! `executions`). A replaced order's reports carry the replace's id as their client order id
//! (and the previous id as orig_client_order_id), so the original id cannot be read from the
//! report alone: the engine notes it ([`Originals::note`]) for every replaced order it holds,
//! when it replaces one and when recovery reads one back, before any of its reports is
//! published. Pure (no I/O).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tracing::error;

use crate::contract;
use crate::order::is_final;
use crate::proto::v1::{self as pb, OrderStatus};

/// The original client order id of every replaced order still open, by engine order id.
#[derive(Debug, Default)]
pub struct Originals {
    by_engine_order_id: Mutex<HashMap<String, String>>,
}

impl Originals {
    /// Notes the original client order id of a replaced order (idempotent).
    pub fn note(&self, engine_order_id: &str, original: &str) {
        self.lock()
            .insert(engine_order_id.to_string(), original.to_string());
    }

    /// The subject of `report`: its order's original id's. A report of a replaced order whose
    /// original was not noted (a bug) goes to its orig_client_order_id's subject, logged.
    pub fn subject(&self, report: &pb::ExecutionReport) -> String {
        if report.orig_client_order_id.is_empty() {
            return contract::executions(&report.account, &report.client_order_id);
        }
        match self.lock().get(&report.engine_order_id) {
            Some(original) => contract::executions(&report.account, original),
            None => {
                error!(
                    engine_order_id = %report.engine_order_id,
                    client_order_id = %report.client_order_id,
                    "report of a replaced order whose original client order id was not noted; published under its orig_client_order_id"
                );
                contract::executions(&report.account, &report.orig_client_order_id)
            }
        }
    }

    /// Forgets the orders these (committed) reports ended.
    pub fn forget_ended<'a>(&self, reports: impl IntoIterator<Item = &'a pb::ExecutionReport>) {
        let ended: Vec<&str> = reports
            .into_iter()
            .filter(|r| {
                !r.orig_client_order_id.is_empty()
                    && is_final(
                        OrderStatus::try_from(r.order_status).unwrap_or(OrderStatus::Unspecified),
                    )
            })
            .map(|r| r.engine_order_id.as_str())
            .collect();
        if !ended.is_empty() {
            let mut map = self.lock();
            for id in ended {
                map.remove(id);
            }
        }
    }

    /// How many replaced orders are noted.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_engine_order_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, orig: &str, status: OrderStatus) -> pb::ExecutionReport {
        pb::ExecutionReport {
            engine_order_id: "e1-7".into(),
            account: "A".into(),
            client_order_id: id.into(),
            orig_client_order_id: orig.into(),
            order_status: status as i32,
            ..Default::default()
        }
    }

    /// Reports stay on the original id's subject through every replace, until the order ends.
    #[test]
    fn reports_stay_on_the_original_subject() {
        let o = Originals::default();
        assert_eq!(
            o.subject(&report("o1", "", OrderStatus::New)),
            contract::executions("A", "o1")
        );
        o.note("e1-7", "o1");
        for (id, orig) in [("r1", "o1"), ("r2", "r1"), ("r3", "r2")] {
            assert_eq!(
                o.subject(&report(id, orig, OrderStatus::New)),
                contract::executions("A", "o1")
            );
        }
        o.forget_ended([&report("r3", "r2", OrderStatus::PartiallyFilled)]);
        assert_eq!(o.len(), 1);
        o.forget_ended([&report("r3", "r2", OrderStatus::Canceled)]);
        assert!(o.is_empty());
        // Not noted: the previous id's subject (and an ERROR line).
        assert_eq!(
            o.subject(&report("r3", "r2", OrderStatus::New)),
            contract::executions("A", "r2")
        );
    }
}
