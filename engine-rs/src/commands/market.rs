//! Market data and input streams in the main loop: publishing the venue's changes (after
//! every command, or once per coalescing window), serving snapshots
//! (`contract::md_snapshot`), opening input streams (`contract::FEED_OPEN`) and applying
//! their messages (`contract::feed_data`). The decisions are the pure cores'
//! ([`crate::marketdata`], [`crate::feed`]); nothing here waits on the order path's I/O, and
//! the order path never waits on market data ([`crate::md_publish`]).

use std::time::Duration;

use prost::Message as _;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::proto::v1 as pb;
use crate::service::{Incoming, ServiceError};
use crate::validate::{echo, field_error};

impl Engine {
    /// After a command (a pull's batch is one): publish what changed now
    /// (`market_data_coalesce_ms` = 0), or make sure it is due at the end of the window.
    pub fn market_data_after_command(&mut self) {
        if !self.md.pending() {
            return;
        }
        match self.cfg.market_data_coalesce_ms {
            0 => self.flush_market_data(),
            ms => {
                if self.md_due.is_none() {
                    self.md_due = Some(Instant::now() + Duration::from_millis(ms));
                }
            }
        }
    }

    /// When the pending market data is due (`None`: nothing pending).
    pub fn market_data_due(&self) -> Option<Instant> {
        self.md_due
    }

    /// Publishes every pending change now.
    pub fn flush_market_data(&mut self) {
        self.md_due = None;
        let venue = &self.venue;
        let flushed = self.md.flush(|s| venue.book(s));
        self.md_out.publish(flushed);
    }

    /// Every symbol's book as it is now (after recovery restored the books): published, so
    /// that the first snapshot is the restored book.
    pub fn publish_books(&mut self) {
        self.md.touch_all(now_ns());
        self.flush_market_data();
    }

    /// A snapshot request: the subject names the symbol; answered from the published view.
    pub async fn on_md_snapshot(&mut self, req: &Incoming) -> Result<(), EngineError> {
        let subject = req.msg().subject.as_str();
        let symbol = subject
            .strip_prefix(contract::MD_SNAPSHOT_PREFIX)
            .unwrap_or("");
        let snapshot = self.md.snapshot(symbol, now_ns());
        self.metrics.market.snapshots.inc();
        req.answer(snapshot.encode_to_vec()).await;
        Ok(())
    }

    /// Opens an input stream: its first grant is the answer.
    pub async fn on_feed_open(&mut self, req: &Incoming) -> Result<(), EngineError> {
        let open = match pb::FeedOpen::decode(req.msg().payload.clone()) {
            Ok(o) => o,
            Err(e) => {
                req.fail(ServiceError::undecodable("bridge.v1.FeedOpen", &e))
                    .await;
                return Ok(());
            }
        };
        let grant = self.feeds.open(&open.stream_id);
        self.metrics
            .market
            .feed_streams
            .set(i64::try_from(self.feeds.open_streams()).unwrap_or(i64::MAX));
        debug!(stream_id = %echo(&open.stream_id), granted_through = grant.granted_through, "input stream opened");
        req.answer(grant.encode_to_vec()).await;
        Ok(())
    }

    /// One input stream message: applied in order within its credit, or refused; a grant
    /// goes to its reply subject when one is due (see [`crate::feed`]).
    pub async fn on_feed_data(&mut self, msg: async_nats::Message) -> Result<(), EngineError> {
        let stream_id = msg
            .subject
            .as_str()
            .strip_prefix(contract::FEED_DATA_PREFIX)
            .unwrap_or("")
            .to_string();
        let grant = match pb::FeedMessage::decode(msg.payload.clone()) {
            Ok(m) => {
                let symbols = &self.limits.symbols;
                let received = self
                    .feeds
                    .receive(&stream_id, &m, |s| symbols.contains_key(s));
                if received.applied {
                    self.metrics.market.feed_applied.inc();
                } else {
                    self.metrics.market.feed_refused.inc();
                }
                for (symbol, price) in received.prices {
                    if let Some(limits) = self.limits.symbols.get_mut(&symbol) {
                        limits.reference_price = price;
                    }
                    // Kept apart too: a configuration change rebuilds the limits, and a
                    // streamed price stays in force over the risk document's static one.
                    self.streamed_prices.insert(symbol, price);
                }
                received.grant
            }
            Err(e) => {
                self.metrics.market.feed_refused.inc();
                Some(pb::FeedGrant {
                    stream_id: stream_id.clone(),
                    errors: vec![field_error(
                        "<message>",
                        "decodable",
                        format!("not a bridge.v1.FeedMessage: {e}"),
                    )],
                    ..Default::default()
                })
            }
        };
        if let (Some(grant), Some(reply)) = (grant, msg.reply) {
            if !grant.errors.is_empty() {
                warn!(stream_id = %echo(&stream_id), errors = grant.errors.len(), first = %grant.errors[0].message, "input stream message refused or partly invalid");
            }
            if let Err(e) = self
                .client
                .publish(reply, grant.encode_to_vec().into())
                .await
            {
                warn!(error = %e, "could not send an input stream grant");
            }
        }
        Ok(())
    }
}
