//! Who may do what (pure, no I/O; time passed in): every order operation (submit, cancel,
//! status, queued) is checked before it is decoded, in this order:
//!
//! 1. signed: the three signature headers are there (else UNSIGNED) and the Ed25519
//!    signature verifies over domain, subject, signed_at and payload ([`signature`]; else
//!    BAD_SIGNATURE);
//! 2. the signer is an identity of the entitlements file ([`entitlements`]; else
//!    BAD_SIGNATURE: "signer U... is not in the entitlements");
//! 3. in time: |reference - signed_at| <= the window, the reference being the engine's clock
//!    for a request and the stored time of a queued order (else SIGNATURE_EXPIRED);
//! 4. new: the same signature was not seen within the window, a JetStream redelivery of the
//!    same stream sequence aside ([`replay`]; else REPLAYED);
//! 5. entitled: the signer has a trading role and is entitled to the subject's account (else
//!    NOT_ENTITLED; a session request names no account: the trading role suffices);
//!
//! and once decoded, 6. the payload's account is the subject's ([`Verified::check_account`];
//! else ACCOUNT_MISMATCH; a payload account that is no id at all is left to validation). Each refusal says which check failed with the values compared; its
//! kind maps to the `RejectReason` and the `SecurityViolationKind` of the same name.

pub mod entitlements;
pub mod replay;
pub mod signature;

pub use entitlements::{Changes, Entitlements, EntitlementsError, Identity, Role};

use crate::contract;
use crate::proto::v1::{RejectReason, SecurityViolationKind};
use crate::validate::{echo, truncate, valid_id, MAX_ACCOUNT_BYTES};
use replay::ReplayCache;
use signature::Headers;

/// The longest refusal text (answers, records, reports, alerts and logs carry it).
pub const MAX_REFUSAL_TEXT_BYTES: usize = 1024;

/// Why an order operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalKind {
    Unsigned,
    BadSignature,
    SignatureExpired,
    Replayed,
    AccountMismatch,
    NotEntitled,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 6] = [
        RefusalKind::Unsigned,
        RefusalKind::BadSignature,
        RefusalKind::SignatureExpired,
        RefusalKind::Replayed,
        RefusalKind::AccountMismatch,
        RefusalKind::NotEntitled,
    ];

    pub fn reject_reason(self) -> RejectReason {
        match self {
            RefusalKind::Unsigned => RejectReason::Unsigned,
            RefusalKind::BadSignature => RejectReason::BadSignature,
            RefusalKind::SignatureExpired => RejectReason::SignatureExpired,
            RefusalKind::Replayed => RejectReason::Replayed,
            RefusalKind::AccountMismatch => RejectReason::AccountMismatch,
            RefusalKind::NotEntitled => RejectReason::NotEntitled,
        }
    }

    pub fn violation(self) -> SecurityViolationKind {
        match self {
            RefusalKind::Unsigned => SecurityViolationKind::Unsigned,
            RefusalKind::BadSignature => SecurityViolationKind::BadSignature,
            RefusalKind::SignatureExpired => SecurityViolationKind::SignatureExpired,
            RefusalKind::Replayed => SecurityViolationKind::Replayed,
            RefusalKind::AccountMismatch => SecurityViolationKind::AccountMismatch,
            RefusalKind::NotEntitled => SecurityViolationKind::NotEntitled,
        }
    }

    /// The `{kind}` token of the alert subject: the violation's enum name without its
    /// `SECURITY_VIOLATION_KIND_` prefix, in lower case (e.g. `bad_signature`).
    pub fn token(self) -> String {
        violation_token(self.violation())
    }
}

/// The alert subject token of any violation kind.
pub fn violation_token(kind: SecurityViolationKind) -> String {
    let name = kind.as_str_name();
    name.strip_prefix("SECURITY_VIOLATION_KIND_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// A refused order operation: the check that failed, a text naming it with the values
/// compared, and who claimed or proved to have signed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub text: String,
    /// The `Bridge-Signer` header as received (bounded; unverified unless `identity` is set).
    pub signer: String,
    /// The signer's identity name, once its signature verified against a known key.
    pub identity: Option<String>,
    /// The account the subject names, if it names one.
    pub account: String,
}

/// One order operation as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub subject: &'a str,
    pub payload: &'a [u8],
    pub headers: Headers<'a>,
    /// What `signed_at` is compared with: the engine's clock (a request) or the time
    /// JetStream stored the message (a queued order), Unix ns.
    pub reference_ns: i64,
    /// The JetStream stream sequence of a queued order (its redeliveries are not replays).
    pub stream_seq: Option<u64>,
}

/// An operation whose signer checked out: who, and the subject's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: String,
    pub nkey: String,
    pub account: String,
}

impl Verified {
    /// The decoded payload's account must be the subject's. A payload account that is not an
    /// id at all (empty, too long, other characters) names nothing the engine could store or
    /// touch: validation refuses it (INVALID_FIELD, answered only), not this check.
    pub fn check_account(&self, payload_account: &str) -> Result<(), Refusal> {
        if payload_account == self.account || !valid_id(payload_account, MAX_ACCOUNT_BYTES) {
            return Ok(());
        }
        Err(Refusal {
            kind: RefusalKind::AccountMismatch,
            text: format!(
                "subject account {} != order account {payload_account}",
                self.account
            ),
            signer: self.nkey.clone(),
            identity: Some(self.identity.clone()),
            account: self.account.clone(),
        })
    }
}

/// The account of an order operation's subject (its last token after one of the order
/// prefixes), if it names one.
pub fn account_of_subject(subject: &str) -> Option<&str> {
    [
        contract::SUBMIT_PREFIX,
        contract::CANCEL_PREFIX,
        contract::STATUS_PREFIX,
        contract::QUEUE_PREFIX,
        contract::QUEUE_BATCH_PREFIX,
        contract::MASS_CANCEL_PREFIX,
        contract::REPLACE_PREFIX,
    ]
    .iter()
    .find_map(|p| subject.strip_prefix(p))
    .filter(|a| !a.is_empty() && !a.contains('.'))
}

/// True for the subjects of session requests (open, close): they name no account, so check 5
/// is only that the signer trades. A session holds only orders its signer was entitled to
/// place, each checked on its own.
fn unscoped(subject: &str) -> bool {
    [
        contract::SESSION_OPEN_PREFIX,
        contract::SESSION_CLOSE_PREFIX,
    ]
    .iter()
    .any(|p| subject.strip_prefix(p).is_some_and(|id| !id.contains('.')))
}

/// The checks, with the entitlements and the replay cache they need.
#[derive(Debug)]
pub struct Authorizer {
    entitlements: Entitlements,
    window_ns: i64,
    replays: ReplayCache,
}

impl Authorizer {
    pub fn new(entitlements: Entitlements, window_ms: u64) -> Authorizer {
        Authorizer::with_capacity(entitlements, window_ms, ReplayCache::DEFAULT_CAPACITY)
    }

    pub fn with_capacity(
        entitlements: Entitlements,
        window_ms: u64,
        replay_capacity: usize,
    ) -> Authorizer {
        let window_ns = i64::try_from(window_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        Authorizer {
            entitlements,
            window_ns,
            replays: ReplayCache::new(window_ns, replay_capacity),
        }
    }

    pub fn entitlements(&self) -> &Entitlements {
        &self.entitlements
    }

    /// Takes new entitlements (a reload); returns what changed. Remembered signatures stay.
    pub fn replace(&mut self, entitlements: Entitlements) -> Changes {
        let changes = self.entitlements.changes(&entitlements);
        self.entitlements = entitlements;
        changes
    }

    /// Replay cache entries dropped early because it was full.
    pub fn replays_evicted(&self) -> u64 {
        self.replays.evicted
    }

    /// Checks 1-5 (see the module docs) of `msg`, at `now_ns` (the replay cache's clock).
    pub fn check(&mut self, msg: &Message<'_>, now_ns: i64) -> Result<Verified, Refusal> {
        let account = account_of_subject(msg.subject).unwrap_or("");
        let claimed = msg.headers.signer.map(bounded_signer).unwrap_or_default();
        let refuse = |kind, text: String, identity: Option<&Identity>| Refusal {
            kind,
            text: truncate(&text, MAX_REFUSAL_TEXT_BYTES).to_string(),
            signer: claimed.clone(),
            identity: identity.map(|i| i.name.clone()),
            account: account.to_string(),
        };
        let signed = signature::verify(msg.subject, msg.payload, &msg.headers)
            .map_err(|(kind, text)| refuse(kind, text, None))?;
        let Some(identity) = self.entitlements.by_nkey(&signed.signer) else {
            return Err(refuse(
                RefusalKind::BadSignature,
                format!("signer {} is not in the entitlements", signed.signer),
                None,
            ));
        };
        let skew = msg.reference_ns.saturating_sub(signed.signed_at_ns);
        if skew.unsigned_abs() > self.window_ns.unsigned_abs() {
            let against = match msg.stream_seq {
                Some(_) => "the time the order was stored",
                None => "the engine's clock",
            };
            let (ms, side) = (
                skew.unsigned_abs() / 1_000_000,
                if skew > 0 { "before" } else { "after" },
            );
            return Err(refuse(
                RefusalKind::SignatureExpired,
                format!(
                    "signed_at {} is {ms} ms {side} {against} {} (window {} ms)",
                    signed.signed_at_ns,
                    msg.reference_ns,
                    self.window_ns / 1_000_000
                ),
                Some(identity),
            ));
        }
        if let Some(first) = self
            .replays
            .check(&signed.signature, msg.stream_seq, now_ns)
        {
            let ago = now_ns.saturating_sub(first.at_ns) / 1_000_000;
            let was = match first.stream_seq {
                Some(seq) => format!("in queued message {seq}"),
                None => "in a request".into(),
            };
            let now = match msg.stream_seq {
                Some(seq) => format!(" (now in queued message {seq})"),
                None => String::new(),
            };
            return Err(refuse(
                RefusalKind::Replayed,
                format!(
                    "replay: this signature of {} was seen {ago} ms ago {was}{now} (window {} \
                     ms)",
                    signed.signer,
                    self.window_ns / 1_000_000
                ),
                Some(identity),
            ));
        }
        if !identity.role.trades() {
            return Err(refuse(
                RefusalKind::NotEntitled,
                format!(
                    "identity {} has role {}, which signs no order operation",
                    identity.name,
                    identity.role.name()
                ),
                Some(identity),
            ));
        }
        if !unscoped(msg.subject) && !identity.entitled(account) {
            let subject_account = if account.is_empty() {
                format!("subject {} names no account", echo(msg.subject))
            } else if valid_id(account, MAX_ACCOUNT_BYTES) {
                format!("account {account}")
            } else {
                format!("account {}", echo(account))
            };
            return Err(refuse(
                RefusalKind::NotEntitled,
                format!(
                    "identity {} is not entitled to {subject_account} (entitled: {})",
                    identity.name,
                    identity.accounts.join(", ")
                ),
                Some(identity),
            ));
        }
        Ok(Verified {
            identity: identity.name.clone(),
            nkey: signed.signer,
            account: account.to_string(),
        })
    }
}

/// An unverified signer header as logged and alerted: at most an NKey's length.
fn bounded_signer(s: &str) -> String {
    truncate(s, 56).to_string()
}

#[cfg(test)]
mod tests;
