//! `bridge-bench`: the Rust servers of the benchmark baselines (`bench/`), one subcommand each.
//!
//! ```text
//! bridge-bench nats-echo   --url U --ca F --cert F --key F --seed F --subject S [--queue G]
//!     (a1) core NATS responder: answers every request on S with the request's own payload
//! bridge-bench js-consumer --url U --ca F --cert F --key F --seed F --stream N --consumer N
//!                          --reply-prefix P
//!     (a2) pulls the durable consumer, publishes each payload (core NATS) to P<Nats-Msg-Id>,
//!     then acks the message: the floor of a durable order that is answered
//! bridge-bench grpc-echo   --ca F --cert F --key F [--listen 127.0.0.1:0]
//!     (c) tonic unary service bridge.bench.v1.OrderEcho/Submit, mutual TLS
//! bridge-bench tcp-echo    (--ca F --cert F --key F | --plain) [--listen 127.0.0.1:0]
//!     (d) length-prefixed frames (u32 big-endian length + bytes) echoed back, mutual TLS 1.3
//! bridge-bench report-sink --url U --ca F --cert F --key F --seed F --inbox-prefix P
//!     receives execution reports (core subscriptions, commands on stdin, see `sink.rs`) and
//!     writes when each order's final report arrived: the harness's receiver of the queued rows
//! ```
//!
//! NATS connections use the engine role's credentials exactly like `engine-rs` (mutual TLS,
//! NKey, inbox prefix `_INBOX.engine`). Every subcommand prints one `ready ...` line on stdout
//! once it serves (`ready 127.0.0.1:PORT` for the listeners) and runs until SIGTERM/SIGINT or
//! until its stdin closes, so a harness that dies takes its servers with it.

mod args;
mod grpc;
mod nats;
mod sink;
mod tcp;
mod tls;

use anyhow::{bail, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::args::Args;

/// Generated protobuf and gRPC code; module paths mirror the proto packages.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    pub mod bridge {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/bridge.v1.rs"));
        }
        pub mod bench {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/bridge.bench.v1.rs"));
            }
        }
    }
}

/// Tells the harness that the server is serving (one line, flushed).
pub fn ready(what: &str) {
    println!("ready {what}");
}

/// Resolves on SIGTERM, SIGINT or when stdin reaches end-of-file.
async fn shutdown() -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: a blocking stdin read inside tokio would hold up runtime shutdown.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = tx.send(());
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = rx => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // ring is the only provider compiled in; make the choice explicit for every TLS user.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut argv = std::env::args().skip(1);
    let Some(cmd) = argv.next() else {
        bail!(
            "usage: bridge-bench <nats-echo|js-consumer|grpc-echo|tcp-echo|report-sink> \
             [--key value]..."
        );
    };
    let args = Args::parse(argv)?;
    if cmd == "report-sink" {
        // Its stdin carries commands (its end-of-file still stops it); SIGTERM's default ends it.
        return sink::run(&args).await;
    }
    let run = async {
        match cmd.as_str() {
            "nats-echo" => nats::echo(&args).await,
            "js-consumer" => nats::js_consumer(&args).await,
            "grpc-echo" => grpc::serve(&args).await,
            "tcp-echo" => tcp::serve(&args).await,
            other => bail!("unknown subcommand {other:?}"),
        }
    };
    tokio::select! {
        r = run => r,
        r = shutdown() => r,
    }
}
