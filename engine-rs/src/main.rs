//! `bridge-engine`: thin entry point. Configuration, tracing, signals, then `service::run`.
//!
//! Usage: `bridge-engine [--config FILE]` (or `BRIDGE_CONFIG_FILE`); every knob can also be set
//! as a `BRIDGE_*` environment variable. Exit code 0 after a clean SIGTERM/SIGINT shutdown.

use std::path::PathBuf;

use anyhow::Context;
use bridge_engine::config::Config;
use bridge_engine::service;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

fn config_path() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("BRIDGE_CONFIG_FILE").map(PathBuf::from)
}

fn init_tracing(format: Option<&str>) {
    let filter = EnvFilter::try_from_env("BRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        Some(f) => f == "json",
        None => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = config_path();
    let cfg = Config::load(path.as_deref()).context("loading configuration")?;
    init_tracing(cfg.log_format.as_deref());
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    service::run(cfg, shutdown).await.context("engine failed")?;
    Ok(())
}
