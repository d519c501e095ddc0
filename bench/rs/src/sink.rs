//! `report-sink`: receives execution reports on core subscriptions and notes, per order, when
//! its first final report arrived, on the clock Python's `time.monotonic_ns()` reads
//! (`CLOCK_MONOTONIC`), so the harness can subtract its own send times from them.
//!
//! A receiver in Rust and in a process of its own takes no CPU from the Python publisher it
//! measures and keeps up with the engine's report rate however high it goes (nats-py would
//! spend ~10 us of the publisher's CPU per report). Commands, one per stdin line:
//!
//! ```text
//! watch ID SUBJECT PREFIX EXPECTED OUT   subscribe SUBJECT; answers `watching ID` once the
//!                                        server has the subscription
//! end ID                                 stop watch ID now (a deadline passed)
//! ```
//!
//! A watch ends when EXPECTED orders whose client order id starts with PREFIX have a final
//! report (FILLED, CANCELED, REJECTED, EXPIRED), or on `end`; it then writes one line
//! `<client_order_id> <monotonic ns>` per such order to OUT and prints `done ID N` (once).
//! stdin reaching end-of-file stops the sink.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::args::Args;
use crate::proto::bridge::v1::{ExecutionReport, OrderStatus};
use crate::{nats, ready};

/// Messages a subscription may buffer before async-nats drops them (slow consumer): far more
/// than any measurement's reports, which are read at once anyway.
const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of Python's `time.monotonic_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn is_final(status: i32) -> bool {
    matches!(
        OrderStatus::try_from(status),
        Ok(OrderStatus::Filled
            | OrderStatus::Canceled
            | OrderStatus::Rejected
            | OrderStatus::Expired)
    )
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn run(a: &Args) -> Result<()> {
    let options = async_nats::ConnectOptions::new().subscription_capacity(SUBSCRIPTION_CAPACITY);
    let client = nats::connect_with(a, options).await?;
    let (tx, mut commands) = mpsc::unbounded_channel::<String>();
    // A plain thread reads stdin (blocking); its end drops `tx`, which ends the loop below.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    client.flush().await?;
    ready("report-sink");
    let mut ends: HashMap<String, oneshot::Sender<()>> = HashMap::new();
    let mut watches = JoinSet::new();
    while let Some(line) = commands.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["watch", id, subject, prefix, expected, out] => {
                let expected: usize = expected.parse().context("watch: EXPECTED")?;
                let sub = client.subscribe((*subject).to_string()).await?;
                client.flush().await?;
                let (end_tx, end_rx) = oneshot::channel();
                ends.insert((*id).to_string(), end_tx);
                let watch = Watch {
                    id: (*id).to_string(),
                    prefix: (*prefix).to_string(),
                    expected,
                    out: PathBuf::from(out),
                };
                watches.spawn(watch.collect(sub, end_rx));
                say(&format!("watching {id}"));
            }
            ["end", id] => {
                if let Some(end) = ends.remove(*id) {
                    let _ = end.send(()); // a watch that already finished ignores it
                }
            }
            _ => bail!("report-sink: unknown command {line:?}"),
        }
        while let Some(done) = watches.try_join_next() {
            done??;
        }
    }
    Ok(())
}

struct Watch {
    id: String,
    prefix: String,
    expected: usize,
    out: PathBuf,
}

impl Watch {
    async fn collect(
        self,
        mut sub: async_nats::Subscriber,
        mut end: oneshot::Receiver<()>,
    ) -> Result<()> {
        let mut seen: HashSet<String> = HashSet::with_capacity(self.expected);
        let mut finals: Vec<(String, u64)> = Vec::with_capacity(self.expected);
        while finals.len() < self.expected {
            tokio::select! {
                biased;
                _ = &mut end => break,
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    let at = monotonic_ns();
                    let report = ExecutionReport::decode(msg.payload)
                        .with_context(|| format!("an undecodable report on {}", msg.subject))?;
                    if is_final(report.order_status)
                        && report.client_order_id.starts_with(&self.prefix)
                        && seen.insert(report.client_order_id.clone())
                    {
                        finals.push((report.client_order_id, at));
                    }
                }
            }
        }
        let _ = sub.unsubscribe().await;
        let file = std::fs::File::create(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let mut w = BufWriter::new(file);
        for (id, at) in &finals {
            writeln!(w, "{id} {at}")?;
        }
        w.flush()?;
        say(&format!("done {} {}", self.id, finals.len()));
        Ok(())
    }
}
