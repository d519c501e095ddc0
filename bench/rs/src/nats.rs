//! Baselines (a1) and (a2): minimal async-nats servers connected like the engine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;

use crate::args::Args;
use crate::ready;

const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// Connects as the engine role: mutual TLS, NKey, `_INBOX.engine` (the pattern of
/// `engine-rs/src/service.rs` `connect()`).
async fn connect(a: &Args) -> Result<async_nats::Client> {
    connect_with(a, async_nats::ConnectOptions::new()).await
}

/// [`connect`] with `options` as the starting point (e.g. a larger subscription capacity);
/// the role is whichever `--cert`, `--key`, `--seed` and `--inbox-prefix` name.
pub async fn connect_with(
    a: &Args,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client> {
    let seed_file = a.get("seed")?;
    let seed =
        std::fs::read_to_string(seed_file).with_context(|| format!("reading {seed_file}"))?;
    let addr: async_nats::ServerAddr = a.get("url")?.parse()?;
    options
        .name("bridge-bench")
        .custom_inbox_prefix(a.get_or("inbox-prefix", "_INBOX.engine"))
        .connection_timeout(Duration::from_secs(5))
        .nkey(seed.trim().to_string())
        .require_tls(true)
        .add_root_certificates(PathBuf::from(a.get("ca")?))
        .add_client_certificate(PathBuf::from(a.get("cert")?), PathBuf::from(a.get("key")?))
        .connect(addr)
        .await
        .context("connecting to NATS")
}

/// (a1) Answers every request on `--subject` (queue group `--queue`) with its payload.
pub async fn echo(a: &Args) -> Result<()> {
    let client = connect(a).await?;
    let subject = a.get("subject")?.to_string();
    let mut sub = client
        .queue_subscribe(
            subject.clone(),
            a.get_or("queue", "bridge-bench").to_string(),
        )
        .await?;
    client.flush().await?;
    ready(&format!("nats-echo {subject}"));
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            client.publish(reply, msg.payload).await?;
        }
    }
    Ok(())
}

/// (a2) Pulls `--consumer` of `--stream`; answers each message on `--reply-prefix<Nats-Msg-Id>`
/// with its payload (core NATS), then acks it.
pub async fn js_consumer(a: &Args) -> Result<()> {
    let client = connect(a).await?;
    let js = jetstream::new(client.clone());
    let stream = a.get("stream")?;
    let name = a.get("consumer")?;
    let prefix = a.get("reply-prefix")?.to_string();
    let consumer: PullConsumer = js
        .get_consumer_from_stream(name, stream)
        .await
        .map_err(|e| anyhow!("consumer {stream}/{name}: {e}"))?;
    let mut messages = consumer.messages().await?;
    client.flush().await?;
    ready(&format!("js-consumer {stream}/{name}"));
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| anyhow!("pull: {e}"))?;
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_MSG_ID))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        client
            .publish(format!("{prefix}{id}"), msg.payload.clone())
            .await?;
        msg.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
    }
    Ok(())
}
