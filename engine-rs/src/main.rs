//! `bridge-engine`: thin entry point. Command line, configuration, logging, signals, then
//! `run::run`.
//!
//! Usage: `bridge-engine [--config FILE] [--print-config]` (or `BRIDGE_CONFIG_FILE`); every
//! knob can also be set as a `BRIDGE_*` environment variable. `--print-config` prints the
//! effective configuration (defaults < file < environment) as JSON, secrets redacted, and
//! exits. Exit code 0 after a clean SIGTERM/SIGINT shutdown.
//!
//! `bridge-engine --check-ready URL` (e.g. `http://127.0.0.1:9464/readyz`) is a probe, not an
//! engine: one GET, exit 0 if it answers 200, else 1 (the container healthcheck; the image has
//! no curl).

use std::path::PathBuf;

use anyhow::Context;
use bridge_engine::config::Config;
use bridge_engine::{http, logging, run};
use tokio::signal::unix::{signal, SignalKind};

struct Args {
    config: Option<PathBuf>,
    print_config: bool,
    check_ready: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut config = None;
    let mut print_config = false;
    let mut check_ready = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            config = Some(PathBuf::from(args.next().context("--config needs a file")?));
        } else if let Some(p) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(p));
        } else if a == "--print-config" {
            print_config = true;
        } else if a == "--check-ready" {
            check_ready = Some(args.next().context("--check-ready needs a URL")?);
        } else {
            anyhow::bail!(
                "unknown argument {a:?}; usage: bridge-engine [--config FILE] [--print-config] \
                 | --check-ready URL"
            );
        }
    }
    let config = config.or_else(|| std::env::var_os("BRIDGE_CONFIG_FILE").map(PathBuf::from));
    Ok(Args {
        config,
        print_config,
        check_ready,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
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
