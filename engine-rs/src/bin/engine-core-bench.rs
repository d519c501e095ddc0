//! `engine-core-bench`: the engine's own per-order work, without NATS, for `bench/`.
//!
//! Usage: `engine-core-bench --config FILE [--orders N] [--symbol S]`
//!
//! For each order, exactly what the engine does between receiving the bytes and handing
//! bytes to JetStream, in one thread: decode the `NewOrder`, validate and risk-check it,
//! encode its record for the order store (`kv.create`), execute it in the venue (price-time book, state
//! machine, reports), encode every report (`EXECUTIONS` publish) and every touched record
//! (`kv.update`). Two workloads, each on a fresh venue seeded from the config (the seed is
//! orders of the house, so a fill against it also reports and stores the house's side):
//! - `market`: 1-lot market IOC orders alternating buy and sell against the seeded
//!   liquidity (the orders of the benchmark's drain);
//! - `cross`: pairs of a 1-lot GTC limit sell that rests in front of the seeded ask and a
//!   1-lot market buy that takes it, so every second order also updates a resting client
//!   order (maker report and record).
//!
//! Prints one JSON line per workload: `{"workload":..,"orders":..,"reports":..,"seconds":..,
//! "orders_per_s":..}`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bridge_engine::config::Config;
use bridge_engine::contract;
use bridge_engine::fixed;
use bridge_engine::house;
use bridge_engine::proto::v1::{self as pb, OrderType, Side, TimeInForce};
use bridge_engine::validate::Validator;
use bridge_engine::venue::{LiveOrder, Venue};
use prost::Message as _;

struct Args {
    config: std::path::PathBuf,
    orders: usize,
    symbol: String,
}

fn args() -> Result<Args> {
    let mut config = None;
    let mut orders = 200_000;
    let mut symbol = "BENCH".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--config" => config = Some(value()?.into()),
            "--orders" => orders = value()?.parse().context("--orders")?,
            "--symbol" => symbol = value()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args {
        config: config.context("--config FILE is required")?,
        orders,
        symbol,
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The `i`-th order of `workload`, serialized as the orchestrator sends it.
fn order(workload: &str, symbol: &str, i: usize, price: i64) -> Vec<u8> {
    let one = fixed::to_decimal(fixed::units(1));
    let (side, order_type, limit_price, tif) = match (workload, i % 2) {
        ("market", 0) => (Side::Buy, OrderType::Market, None, TimeInForce::Ioc),
        ("market", _) => (Side::Sell, OrderType::Market, None, TimeInForce::Ioc),
        (_, 0) => (
            Side::Sell,
            OrderType::Limit,
            Some(fixed::to_decimal(price)),
            TimeInForce::Gtc,
        ),
        (_, _) => (Side::Buy, OrderType::Market, None, TimeInForce::Ioc),
    };
    pb::NewOrder {
        client_order_id: format!("core-{i:09}"),
        account: "BENCH".into(),
        symbol: symbol.into(),
        side: side as i32,
        order_type: order_type as i32,
        quantity: Some(one),
        limit_price,
        time_in_force: tif as i32,
        created_at_unix_ns: now_ns(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn run(cfg: &Config, args: &Args, workload: &str) -> Result<()> {
    let limits = cfg.limits()?;
    let validator = Validator {
        symbols: &limits,
        max_notional: cfg.max_notional()?,
    };
    let reference = limits
        .get(&args.symbol)
        .with_context(|| format!("symbol {} is not configured", args.symbol))?
        .reference_price;
    let mut venue = Venue::new(&limits);
    let seeds = house::seed_orders(&limits, &cfg.engine_id, &cfg.seed_generation)?;
    let first = args.orders as u64 + 1;
    house::place(&mut venue, seeds, &cfg.engine_id, first, now_ns())?;
    let wire: Vec<Vec<u8>> = (0..args.orders)
        .map(|i| order(workload, &args.symbol, i, reference))
        .collect();
    let mut reports = 0usize;
    let mut bytes = 0usize;
    let started = Instant::now();
    for (seq, payload) in wire.iter().enumerate() {
        let order = pb::NewOrder::decode(payload.as_slice())?;
        let now = now_ns();
        let valid = match validator.check(&order, now) {
            Ok(v) => v,
            Err(rej) => bail!("order {seq} rejected: {}", rej.text()),
        };
        let key = contract::order_key(&order.account, &order.client_order_id);
        let live = LiveOrder::new(key, order, &cfg.engine_id, seq as u64 + 1, "c-1");
        bytes += live.record.encode_to_vec().len();
        for t in venue.execute(live, &valid, now)?.into_all() {
            for r in &t.reports {
                bytes += r.encode_to_vec().len();
                reports += 1;
            }
            bytes += t.order.record.encode_to_vec().len();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    println!(
        "{{\"workload\":\"{workload}\",\"orders\":{},\"reports\":{reports},\"seconds\":{seconds:.6},\"orders_per_s\":{:.1}}}",
        args.orders,
        args.orders as f64 / seconds
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = args()?;
    let cfg = Config::load(Some(&args.config)).context("loading configuration")?;
    for workload in ["market", "cross"] {
        run(&cfg, &args, workload)?;
    }
    Ok(())
}
