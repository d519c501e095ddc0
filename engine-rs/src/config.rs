//! Engine configuration: defaults in code < TOML file < `BRIDGE_*` environment variables.
//! Unknown keys are an error. A knob with the same name as one of the Python client's
//! (`bridge/config.py`) means the same thing in the same unit; a knob that was renamed fails
//! start-up naming its new name ([`RENAMED`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::book::Side;
use crate::fixed;
use crate::limits::{Limits, SymbolLimits};
use crate::venue::SessionEnd;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Comma-separated NATS URLs.
    pub nats_url: String,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub nkey_seed_file: Option<PathBuf>,
    /// The entitlements file (format: `nats/entitlements.toml`, with every key resolved):
    /// who may sign order operations for which accounts. Re-read on SIGHUP. Required when
    /// `require_signatures` is on.
    pub entitlements_file: Option<PathBuf>,
    /// Refuse every order operation (submit, cancel, status, queued) that is not signed by an
    /// identity entitled to its account. Off only to measure the cost of signing: nothing is
    /// checked and no signer is recorded.
    pub require_signatures: bool,
    /// A signature whose signed_at is further than this from the engine's clock (a queued
    /// order: from the time JetStream stored it) is refused; a signature is remembered this
    /// long to refuse its replays.
    pub signature_window_ms: u64,
    /// Must match the engine role's subscribe permission (`_INBOX.engine.>`).
    pub inbox_prefix: String,
    pub client_name: String,
    /// Stable identity of this engine; it recovers the orders it owns after a restart.
    /// Every engine sharing a deployment needs a distinct id.
    pub engine_id: String,
    /// Symbol-partitioned engines (`partitions.rs`): this engine takes its fair share of the
    /// contract's partitions from the lease bucket, beside every other engine of the
    /// deployment, and takes over those of an engine that stops. Off: one engine serves every
    /// configured symbol (a second one refuses to start).
    pub partitioned: bool,
    /// The partition this engine instance serves (set by `partitions.rs`, never configured):
    /// its `engine_id` is then the partition's id.
    #[serde(skip)]
    pub partition: Option<u32>,
    /// Per-attempt connect timeout.
    pub connect_timeout_ms: u64,
    /// async-nats' request timeout of JetStream API calls (publish acks, KV reads and writes).
    pub jetstream_request_timeout_ms: u64,
    /// Reconnect and retry backoff (see `retry.rs`): the n-th consecutive failure waits
    /// min(reconnect_max_delay_ms, reconnect_initial_delay_ms * 2^n) + uniform(0, reconnect_jitter_ms).
    pub reconnect_initial_delay_ms: u64,
    pub reconnect_max_delay_ms: u64,
    pub reconnect_jitter_ms: u64,
    /// Consecutive failed reconnect attempts before the connection is given up (the engine then
    /// exits non-zero); -1 = never give up.
    pub max_reconnect_attempts: i64,
    /// How long start-up keeps retrying the first connection (same backoff) before failing.
    pub connect_deadline_ms: u64,
    /// Client PINGs; two unanswered ones mark the server dead and trigger a reconnect.
    pub ping_interval_ms: u64,
    /// JetStream operations (order store writes, report publishes, acks) that time out or find
    /// no responder are retried (idempotently) up to this many attempts in total...
    pub jetstream_retry_max_attempts: u32,
    /// ...and for at most this long; then the engine stops (exit non-zero) and recovery on
    /// restart restores consistency.
    pub jetstream_retry_deadline_ms: u64,
    /// A pull request that yields neither a message nor its end for pull_expires_ms plus this
    /// long is stalled (e.g. its server or consumer leader died): it is abandoned, the consumer
    /// re-bound (re-created from its definition if deleted) and a new pull issued.
    pub consumer_stall_timeout_ms: u64,
    /// Messages buffered per subscription inside the engine (bounded channel).
    pub subscription_capacity: usize,
    /// Queued orders fetched per pull request (the server also bounds them by the consumer's
    /// max_ack_pending, see bridge/jetstream/orders-engine.consumer.json).
    pub pull_batch: usize,
    /// Synchronous orders already received that are taken together into one commit group
    /// (one journal entry), at most.
    pub sync_group_max: usize,
    pub pull_expires_ms: u64,
    /// How long SIGTERM waits for in-flight work before giving up.
    pub shutdown_timeout_ms: u64,
    /// At start-up the engine reads EXECUTIONS backwards from its last message, at most this
    /// many sequences, to find the head of its execution report hash chain (`chain.rs`); not
    /// found within them, it refuses to start.
    pub chain_search_limit: u64,
    /// "json" or "text"; unset = json unless stderr is a terminal.
    pub log_format: Option<String>,
    /// Risk: maximum notional (price x quantity) of one order, as a decimal string.
    pub max_order_notional: String,
    /// Fault injection for crash tests only: "after_ack" aborts the process right after a
    /// synchronous ack is sent, "after_store" right after the records of a pull's queued orders
    /// are in the order store, "mid_publish" halfway through staging the report batch of an
    /// execution with fills (before its commit), "mid_mass_cancel" once the first of several
    /// report batches of a mass cancel is committed (before the rest and any record update);
    /// "replace_after_alias" / "replace_after_publish" between a replace's writes
    /// (`commands/replace.rs`); "after_journal" once a group's journal entry is stored,
    /// "mid_journal" between two entries of a group larger than one entry (`commit.rs`).
    pub failpoint: Option<String>,
    /// Generation of the seeded liquidity (see `house.rs`): each seed order is placed once
    /// per generation; a new value cancels the live seed orders of the others and places the
    /// configured seed afresh.
    pub seed_generation: String,
    /// host:port of the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`); port 0 = any
    /// free port (the bound address is logged as `http listening`).
    pub http_listen: String,
    /// How often the stream and consumer figures of `/metrics` are read from JetStream.
    pub metrics_refresh_ms: u64,
    /// Market data (`marketdata.rs`): 0 = publish after every command (a pull's batch of
    /// queued orders is one); more = publish at most once per this window per symbol, one
    /// update carrying every change and trade of the window.
    pub market_data_coalesce_ms: u64,
    /// Input streams (`feed.rs`): messages of credit per grant; a new grant every half window
    /// applied.
    pub feed_window: u64,
    /// Input streams open at once; one more forgets the stream idle longest.
    pub feed_max_streams: usize,
    /// When DAY orders expire (EXPIRED, reason SESSION_END): a UTC time of day `HH:MM:SS`,
    /// every day; an order expires at the first one after it was accepted
    /// (`venue/expiry.rs`). Default 21:00:00: at or after the US equity close (16:00 New York)
    /// in winter and summer time alike.
    pub day_session_end_utc: String,
    /// Sessions (cancel on disconnect, `sessions.rs`): the grace of a SessionOpen asking for 0,
    /// and the bounds every requested grace is clamped to.
    pub session_default_grace_ms: u64,
    pub session_min_grace_ms: u64,
    pub session_max_grace_ms: u64,
    pub symbols: BTreeMap<String, SymbolConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SymbolConfig {
    /// Risk: maximum quantity of one order.
    pub max_order_qty: String,
    /// Price used to estimate a market order's notional for the risk check.
    pub reference_price: String,
    /// Resting liquidity placed in the book at start-up.
    #[serde(default)]
    pub seed: Vec<SeedLevel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeedLevel {
    pub side: SeedSide,
    pub price: String,
    pub qty: String,
    /// How many separate resting orders of `qty` to place at this price.
    #[serde(default = "one")]
    pub orders: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeedSide {
    Buy,
    Sell,
}

impl From<SeedSide> for Side {
    fn from(s: SeedSide) -> Side {
        match s {
            SeedSide::Buy => Side::Buy,
            SeedSide::Sell => Side::Sell,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats_url: "tls://127.0.0.1:4222".into(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            nkey_seed_file: None,
            entitlements_file: None,
            require_signatures: true,
            signature_window_ms: 30_000,
            inbox_prefix: "_INBOX.engine".into(),
            client_name: "bridge-engine".into(),
            engine_id: "engine-1".into(),
            partitioned: false,
            partition: None,
            connect_timeout_ms: 2000,
            jetstream_request_timeout_ms: 2000,
            reconnect_initial_delay_ms: 50,
            reconnect_max_delay_ms: 2000,
            reconnect_jitter_ms: 100,
            max_reconnect_attempts: -1,
            connect_deadline_ms: 10_000,
            ping_interval_ms: 5000,
            jetstream_retry_max_attempts: 1000,
            jetstream_retry_deadline_ms: 30_000,
            consumer_stall_timeout_ms: 2000,
            subscription_capacity: 8192,
            pull_batch: 64,
            sync_group_max: 64,
            pull_expires_ms: 500,
            shutdown_timeout_ms: 10_000,
            chain_search_limit: 100_000,
            log_format: None,
            max_order_notional: "10000000".into(),
            failpoint: None,
            seed_generation: "1".into(),
            http_listen: "127.0.0.1:9464".into(),
            metrics_refresh_ms: 5000,
            market_data_coalesce_ms: 0,
            feed_window: 256,
            feed_max_streams: 64,
            day_session_end_utc: "21:00:00".into(),
            session_default_grace_ms: 5000,
            session_min_grace_ms: 250,
            session_max_grace_ms: 300_000,
            symbols: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration: {field}: {value:?} {reason}")]
    Value {
        field: String,
        value: String,
        reason: String,
    },
    #[error("configuration: {old} was renamed: use {use_instead} ({where_set})")]
    Renamed {
        old: &'static str,
        use_instead: &'static str,
        /// Where the old name was set: the file, or the environment variable.
        where_set: String,
    },
}

/// Knobs that were renamed, with what to use instead. Setting one fails start-up: a knob that
/// silently stopped working would be worse.
pub const RENAMED: [(&str, &str); 3] = [
    (
        "retry_max_attempts",
        "jetstream_retry_max_attempts (engine) / order_retry_max_attempts (client)",
    ),
    (
        "retry_deadline_ms",
        "jetstream_retry_deadline_ms (engine) / order_retry_deadline_ms (client)",
    ),
    (
        "request_timeout_ms",
        "jetstream_request_timeout_ms (engine; the client's request_timeout_ms is its engine \
         request timeout)",
    ),
];

/// Old names the client still uses with its own meaning: their `BRIDGE_*` variables are the
/// client's and are left alone here; only the file (the engine's own) refuses them.
const CLIENT_KNOBS: [&str; 1] = ["request_timeout_ms"];

/// Fails if a renamed knob is set in the file or the environment.
fn refuse_renamed(file: Option<&Path>) -> Result<(), ConfigError> {
    let in_file = file.map(|path| (path, Figment::from(Toml::file_exact(path))));
    for (old, use_instead) in RENAMED {
        let var = format!("BRIDGE_{}", old.to_uppercase());
        let where_set = match &in_file {
            Some((path, fig)) if fig.contains(old) => Some(format!("set in {}", path.display())),
            _ if !CLIENT_KNOBS.contains(&old) && std::env::var_os(&var).is_some() => {
                Some(format!("set as {var}"))
            }
            _ => None,
        };
        if let Some(where_set) = where_set {
            return Err(ConfigError::Renamed {
                old,
                use_instead,
                where_set,
            });
        }
    }
    Ok(())
}

impl Config {
    /// Loads defaults, then `file` (if any), then `BRIDGE_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        refuse_renamed(file)?;
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        // Only variables naming one of our knobs: the Python client shares the BRIDGE_ prefix
        // (and BRIDGE_CONFIG_FILE / BRIDGE_LOG are not knobs). Unknown keys in the file are
        // still an error. Each variable is read in its natural form: figment parses a value
        // ("1000" -> an integer), which is right for numeric knobs but would refuse
        // `BRIDGE_MAX_ORDER_NOTIONAL=1000` for a decimal-string knob and could turn "190.10"
        // into a float: text knobs take the variable's text verbatim instead.
        let (text, parsed) = Config::knob_names();
        fig = fig.merge(
            Env::prefixed("BRIDGE_").filter(move |k| parsed.iter().any(|n| k == n.as_str())),
        );
        for knob in text {
            if let Ok(value) = std::env::var(format!("BRIDGE_{}", knob.to_uppercase())) {
                fig = fig.merge(Serialized::default(&knob, value));
            }
        }
        let cfg: Config = fig.extract().map_err(Box::new)?;
        cfg.limits()?;
        cfg.max_notional()?;
        cfg.check_retry_knobs()?;
        cfg.day_session_end()?;
        cfg.session_grace()?;
        Ok(cfg)
    }

    /// Top-level knob names (the keys of the defaults), lower case: those holding text (a
    /// string, or an optional string or path whose default is unset), then the others
    /// (numbers, and the `symbols` table).
    fn knob_names() -> (Vec<String>, Vec<String>) {
        let mut text = Vec::new();
        let mut parsed = Vec::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(Config::default()) {
            for (name, default) in map {
                match default {
                    serde_json::Value::String(_) | serde_json::Value::Null => text.push(name),
                    _ => parsed.push(name),
                }
            }
        }
        (text, parsed)
    }

    /// The reconnect/retry knobs must describe a usable policy (same rules as the Python side).
    fn check_retry_knobs(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, value: String, reason: &str| {
            Err(ConfigError::Value {
                field: field.into(),
                value,
                reason: reason.into(),
            })
        };
        if self.max_reconnect_attempts == 0 || self.max_reconnect_attempts < -1 {
            return bad(
                "max_reconnect_attempts",
                self.max_reconnect_attempts.to_string(),
                "must be -1 (never give up) or at least 1",
            );
        }
        if self.jetstream_retry_max_attempts == 0 {
            return bad(
                "jetstream_retry_max_attempts",
                "0".into(),
                "must be at least 1",
            );
        }
        if self.metrics_refresh_ms == 0 {
            return bad("metrics_refresh_ms", "0".into(), "must be at least 1");
        }
        if self.feed_window == 0 {
            return bad("feed_window", "0".into(), "must be at least 1");
        }
        if self.feed_max_streams == 0 {
            return bad("feed_max_streams", "0".into(), "must be at least 1");
        }
        if self.reconnect_initial_delay_ms > self.reconnect_max_delay_ms {
            return bad(
                "reconnect_initial_delay_ms",
                self.reconnect_initial_delay_ms.to_string(),
                "must not exceed reconnect_max_delay_ms",
            );
        }
        Ok(())
    }

    /// The authorization knobs must describe a usable policy: signatures required means an
    /// entitlements file to check them against. Checked at start-up (not by `load`, so that
    /// `--print-config` shows any configuration).
    pub fn check_authorization(&self) -> Result<(), ConfigError> {
        if self.require_signatures && self.entitlements_file.is_none() {
            return Err(ConfigError::Value {
                field: "entitlements_file".into(),
                value: String::new(),
                reason: "is required when require_signatures is true (set entitlements_file \
                         / BRIDGE_ENTITLEMENTS_FILE to a resolved entitlements file; \
                         require_signatures = false only to measure the cost of signing)"
                    .into(),
            });
        }
        if self.signature_window_ms == 0 {
            return Err(ConfigError::Value {
                field: "signature_window_ms".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The configuration as JSON with every secret-valued knob shown as `"***"` (paths to
    /// secrets are not secrets): what `bridge-engine --print-config` prints.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut v {
            for key in SECRET_KNOBS {
                if let Some(value) = map.get_mut(key) {
                    if !value.is_null() {
                        *value = "***".into();
                    }
                }
            }
        }
        v
    }

    /// The limits of the pure core, in fixed point.
    pub fn core_limits(&self) -> Result<Limits, ConfigError> {
        Limits::try_from(self)
    }

    /// `day_session_end_utc`, parsed.
    pub fn day_session_end(&self) -> Result<SessionEnd, ConfigError> {
        SessionEnd::parse(&self.day_session_end_utc).map_err(|reason| ConfigError::Value {
            field: "day_session_end_utc".into(),
            value: self.day_session_end_utc.clone(),
            reason,
        })
    }

    pub fn max_notional(&self) -> Result<i64, ConfigError> {
        parse_field("max_order_notional", &self.max_order_notional)
    }

    /// Every symbol's limits in fixed point.
    pub fn limits(&self) -> Result<BTreeMap<String, SymbolLimits>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.symbols {
            let field = |f: &str| format!("symbols.{name}.{f}");
            let mut seed = Vec::new();
            for (i, level) in s.seed.iter().enumerate() {
                let price = parse_field(&field(&format!("seed[{i}].price")), &level.price)?;
                let qty = parse_field(&field(&format!("seed[{i}].qty")), &level.qty)?;
                seed.push((level.side.into(), price, qty, level.orders));
            }
            out.insert(
                name.clone(),
                SymbolLimits {
                    max_order_qty: parse_field(&field("max_order_qty"), &s.max_order_qty)?,
                    reference_price: parse_field(&field("reference_price"), &s.reference_price)?,
                    seed,
                },
            );
        }
        Ok(out)
    }
}

impl TryFrom<&Config> for Limits {
    type Error = ConfigError;

    fn try_from(cfg: &Config) -> Result<Limits, ConfigError> {
        Ok(Limits {
            symbols: cfg.limits()?,
            max_notional: cfg.max_notional()?,
        })
    }
}

/// Knobs whose value is a secret (none today: the NKey seed and the TLS key are read from the
/// files the `*_file` knobs name). Listed so that a secret-valued knob added later is redacted
/// by `--print-config` once it is named here.
const SECRET_KNOBS: [&str; 0] = [];

fn parse_field(field: &str, value: &str) -> Result<i64, ConfigError> {
    match fixed::parse(value) {
        Ok(v) if v > 0 => Ok(v),
        Ok(_) => Err(ConfigError::Value {
            field: field.into(),
            value: value.into(),
            reason: "must be positive".into(),
        }),
        Err(e) => Err(ConfigError::Value {
            field: field.into(),
            value: value.into(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests;
