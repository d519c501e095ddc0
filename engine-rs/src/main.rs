//! `bridge-engine`: thin entry point. Command line, configuration, logging, signals, then
//! `run::run`.
//!
//! Usage: `bridge-engine [--config FILE] [--print-config]` (or `BRIDGE_CONFIG_FILE`), parsed by
//! clap (`--help`, `--version`; a bad argument exits 2 with a usage line); every knob can also be
//! set as a `BRIDGE_*` environment variable. `--print-config` prints the effective
//! configuration (defaults < file < environment) as JSON, secrets redacted, and exits. Exit
//! code 0 after a clean SIGTERM/SIGINT shutdown.
//!
//! `bridge-engine --check-ready URL` (e.g. `http://127.0.0.1:9464/readyz`) is a probe, not an
//! engine: one GET, exit 0 if it answers 200, else 1 (the container healthcheck; the image has
//! no curl).

use std::path::PathBuf;

use anyhow::Context;
use bridge_engine::config::Config;
use bridge_engine::{http, logging, run};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// Execution engine of the bridge: consumes orders from NATS JetStream, risk-checks and matches
/// them, publishes execution reports.
///
/// Every knob of the configuration file can also be set as a BRIDGE_* environment variable
/// (defaults < file < environment). Exit code 0 after a clean SIGTERM/SIGINT shutdown.
#[derive(Debug, Parser)]
#[command(name = "bridge-engine", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE", env = "BRIDGE_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as JSON, secrets redacted, and exit.
    #[arg(long)]
    print_config: bool,
    /// Probe, not an engine: GET URL (e.g. http://127.0.0.1:9464/readyz) once; exit 0 if it
    /// answers 200, else 1 (the container healthcheck: the image has no curl).
    #[arg(long, value_name = "URL", conflicts_with = "print_config")]
    check_ready: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(url) = &args.check_ready {
        // One line either way, never a backtrace: its output lands in `docker inspect`.
        match http::check::status(url).await {
            Ok(code) => {
                println!("{url}: {code}");
                std::process::exit(if code == 200 { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let cfg = Config::load(args.config.as_deref()).context("loading configuration")?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&cfg.redacted_json())?);
        return Ok(());
    }
    logging::init(cfg.log_format.as_deref());
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    run::run(cfg, shutdown).await.context("engine failed")?;
    Ok(())
}
