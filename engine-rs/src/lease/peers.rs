//! Which other engines are live, from the lease bucket: what a mass cancel is relayed to
//! (`commands/mass_cancel.rs`).
//!
//! Every live engine holds the lease of each symbol it serves (`symbol.<SYM>`, plus the shared
//! `intake`), renewed every TTL/3 and gone one TTL after its holder stopped renewing. So the
//! holders in the bucket are the engines whose books can hold open orders: an engine that holds
//! no lease serves no book (it stops the moment it loses one). A holder may have died within
//! the last TTL: a relay to it then finds no responder, which the caller reports.

use async_nats::jetstream;
use futures::TryStreamExt;

use super::Holder;
use crate::contract;

/// The engine ids, other than `me`, that hold a lease (`Some(symbol)`: only the lease of that
/// symbol), sorted and each once. `leases`: each key with its holder (`None`: a value that is
/// not one).
pub fn peer_engines<'a>(
    leases: impl IntoIterator<Item = (&'a str, Option<&'a Holder>)>,
    me: &str,
    symbol: Option<&str>,
) -> Vec<String> {
    let wanted = symbol.map(contract::lease_symbol_key);
    let mut out: Vec<String> = leases
        .into_iter()
        .filter(|(key, _)| wanted.as_deref().is_none_or(|w| w == *key))
        .filter_map(|(_, holder)| holder.map(|h| h.engine_id.clone()))
        .filter(|id| id != me)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every key of the lease bucket with its holder, read now. `Err`: the bucket could not be
/// read (the text says why).
pub async fn read_leases(
    client: &async_nats::Client,
    symbol: Option<&str>,
) -> Result<Vec<(String, Option<Holder>)>, String> {
    let js = jetstream::new(client.clone());
    let kv = js
        .get_key_value(contract::LEASES_KV_BUCKET)
        .await
        .map_err(|e| format!("lease bucket {}: {e}", contract::LEASES_KV_BUCKET))?;
    let keys: Vec<String> = match symbol {
        // One symbol: its one key, no listing.
        Some(s) => vec![contract::lease_symbol_key(s)],
        None => kv
            .keys()
            .await
            .map_err(|e| format!("listing the leases: {e}"))?
            .try_collect()
            .await
            .map_err(|e| format!("listing the leases: {e}"))?,
    };
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let value = kv
            .get(&key)
            .await
            .map_err(|e| format!("reading lease {key}: {e}"))?;
        if let Some(value) = value {
            out.push((key, Holder::decode(&value)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(engine_id: &str) -> Holder {
        Holder {
            engine_id: engine_id.into(),
            instance: "i".into(),
            host: "h".into(),
            pid: 1,
            taken_unix_ms: 0,
        }
    }

    /// Other holders, each once, sorted; not this engine, not a value that is no holder.
    #[test]
    fn other_holders_once() {
        let (a, b, c) = (holder("engine-A"), holder("engine-B"), holder("engine-C"));
        let leases = [
            ("intake", Some(&a)),
            ("symbol.AAPL", Some(&a)),
            ("symbol.MSFT", Some(&c)),
            ("symbol.ETH", Some(&b)),
            ("symbol.SOL", Some(&b)),
            ("symbol.XRP", None),
        ];
        assert_eq!(
            peer_engines(leases, "engine-A", None),
            ["engine-B", "engine-C"]
        );
        assert_eq!(peer_engines(leases, "engine-A", Some("ETH")), ["engine-B"]);
        assert!(peer_engines(leases, "engine-A", Some("AAPL")).is_empty());
        assert!(peer_engines(leases, "engine-A", Some("IBM")).is_empty());
        assert!(peer_engines([], "engine-A", None).is_empty());
    }
}
