//! The tamper-evident execution journal (pure, no I/O): each engine's execution reports form a
//! hash chain.
//!
//! `digest_n = SHA-256(digest_{n-1} || payload_n)` over the report's exact bytes, starting from
//! [`GENESIS`] (32 zero bytes). Every report carries four headers: [`contract::HEADER_CHAIN`]
//! (the engine id: whose chain), [`contract::HEADER_CHAIN_PREV`] and
//! [`contract::HEADER_CHAIN_DIGEST`] (lower-case hex) and [`contract::HEADER_CHAIN_SIGNATURE`]
//! (Ed25519 of the engine's NKey over the 32 digest bytes, base64url without padding). So a
//! report removed from EXECUTIONS breaks the next report's `prev`, an altered one its own
//! digest, and an inserted one needs the engine's key. `bridge audit verify`
//! (`bridge/audit.py`) checks a stream against these rules.
//!
//! Where the chain meets I/O: `publish.rs` links each batch before its first attempt and
//! advances the head once the batch is committed; at start-up `publish.rs` walks EXECUTIONS
//! backwards and asks [`examine`] about each message until it finds this engine's head.

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use sha2::{Digest as _, Sha256};

use crate::contract;
use crate::engine_key::EngineKey;

/// A link digest.
pub type Digest = [u8; 32];

/// The `prev` of a chain's first report.
pub const GENESIS: Digest = [0; 32];

/// `SHA-256(prev || payload)`.
pub fn link(prev: &Digest, payload: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(payload);
    h.finalize().into()
}

/// Lower-case hex of a digest (the header form).
pub fn to_hex(d: &Digest) -> String {
    HEXLOWER.encode(d)
}

/// A digest from its header form; `None` unless exactly 64 lower-case hex digits.
pub fn from_hex(text: &str) -> Option<Digest> {
    HEXLOWER
        .decode(text.as_bytes())
        .ok()
        .and_then(|v| Digest::try_from(v.as_slice()).ok())
}

/// One report's place in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub prev: Digest,
    pub digest: Digest,
    /// base64url (no padding) Ed25519 signature over `digest`; `None` without an engine key.
    pub signature: Option<String>,
}

impl Link {
    /// The chain headers of the report, `(name, value)`, in a fixed order.
    pub fn headers(&self, engine_id: &str) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (contract::HEADER_CHAIN, engine_id.to_string()),
            (contract::HEADER_CHAIN_PREV, to_hex(&self.prev)),
            (contract::HEADER_CHAIN_DIGEST, to_hex(&self.digest)),
        ];
        if let Some(signature) = &self.signature {
            out.push((contract::HEADER_CHAIN_SIGNATURE, signature.clone()));
        }
        out
    }
}

/// An engine's chain: its id and the digest of its last committed report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub engine_id: String,
    pub head: Digest,
}

impl Chain {
    pub fn new(engine_id: impl Into<String>, head: Digest) -> Chain {
        Chain {
            engine_id: engine_id.into(),
            head,
        }
    }

    /// The links of a batch of payloads, in order, continuing from the head. The head does not
    /// move: call [`Chain::advance`] once the batch is committed.
    pub fn links<P: AsRef<[u8]>>(&self, payloads: &[P], key: Option<&EngineKey>) -> Vec<Link> {
        let mut prev = self.head;
        payloads
            .iter()
            .map(|p| {
                let digest = link(&prev, p.as_ref());
                let l = Link {
                    prev,
                    digest,
                    signature: key.map(|k| BASE64URL_NOPAD.encode(&k.sign(&digest))),
                };
                prev = digest;
                l
            })
            .collect()
    }

    /// The batch ending with `last` is committed: it is the new head.
    pub fn advance(&mut self, last: Digest) {
        self.head = last;
    }
}

/// The chain headers of a stored message, as read back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored<'a> {
    pub chain: Option<&'a str>,
    pub prev: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// What one stored message says about `engine_id`'s head, walking EXECUTIONS backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Examined {
    /// This engine's last report: its digest is the head.
    Head(Digest),
    /// Another engine's report: keep walking.
    Other,
    /// A report without chain headers: written before the chain existed, so nothing older
    /// can belong to this engine's chain (it has never written an unchained report since):
    /// the chain starts at genesis.
    Unchained,
    /// This engine's report whose headers do not hold: the journal was tampered with.
    Tampered(String),
}

/// Examines one stored message for `engine_id` (see [`Examined`]).
pub fn examine(engine_id: &str, stored: Stored<'_>, payload: &[u8]) -> Examined {
    let Some(chain) = stored.chain else {
        return Examined::Unchained;
    };
    if chain != engine_id {
        return Examined::Other;
    }
    let Some(prev) = stored.prev.and_then(from_hex) else {
        return Examined::Tampered(format!(
            "{} is {:?}, not 64 hex digits",
            contract::HEADER_CHAIN_PREV,
            stored.prev.unwrap_or("(missing)")
        ));
    };
    let Some(digest) = stored.digest.and_then(from_hex) else {
        return Examined::Tampered(format!(
            "{} is {:?}, not 64 hex digits",
            contract::HEADER_CHAIN_DIGEST,
            stored.digest.unwrap_or("(missing)")
        ));
    };
    let computed = link(&prev, payload);
    if computed == digest {
        Examined::Head(digest)
    } else {
        Examined::Tampered(format!(
            "{} {} != SHA-256(prev || payload) {}",
            contract::HEADER_CHAIN_DIGEST,
            to_hex(&digest),
            to_hex(&computed)
        ))
    }
}

#[cfg(test)]
mod tests;
