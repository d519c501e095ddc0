//! The contract version a request was built with: its `Bridge-Schema-Version` header
//! ([`contract::HEADER_SCHEMA_VERSION`], `major.minor`), checked against the version this
//! engine speaks ([`contract::CONTRACT_VERSION`]). Pure: no I/O.
//!
//! The rule (N-1 on the wire, schemas/README.md):
//! - absent: contract 1.0, whose clients did not send the header;
//! - the engine's major, any minor: accepted, a newer minor included (a minor only adds
//!   fields and messages, which the engine ignores or does not serve);
//! - another major: refused, reason `UNSUPPORTED_VERSION`, field error
//!   `Bridge-Schema-Version` / `supported_major`;
//! - not `major.minor` (decimal digits, e.g. `1.1`): refused the same way, rule `format`.
//!
//! The version in use is visible as a metric label ([`Checked::label`], bounded: the minors
//! this engine knows exactly, any later one as `<major>.newer`) and, as the header gave it, in
//! the request's log span ([`Checked::span_value`]).

use crate::contract;
use crate::proto::v1::RejectReason;
use crate::validate::{echo, field_error, truncate, Rejection};

/// The field name of a version refusal's field error: the header's.
pub const FIELD: &str = contract::HEADER_SCHEMA_VERSION;
/// Rule of a field error: the header names a major this engine does not speak.
pub const RULE_SUPPORTED_MAJOR: &str = "supported_major";
/// Rule of a field error: the header is not `major.minor`.
pub const RULE_FORMAT: &str = "format";
/// Metric label of a refused other major.
pub const LABEL_UNSUPPORTED: &str = "unsupported";
/// Metric label of an unparsable header.
pub const LABEL_INVALID: &str = "invalid";
/// Longest header value a log span carries.
const SPAN_BYTES: usize = 16;

/// A contract version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version of a sender that does not send the header: 1.0.
pub const UNDECLARED: Version = Version { major: 1, minor: 0 };

/// `major.minor`: one or more decimal digits each (at most 9, so that it fits), nothing else.
pub fn parse(text: &str) -> Option<Version> {
    let (major, minor) = text.split_once('.')?;
    let number = |s: &str| {
        let digits = !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| s.parse::<u32>().ok()).flatten()
    };
    Some(Version {
        major: number(major)?,
        minor: number(minor)?,
    })
}

/// The version this engine speaks ([`contract::CONTRACT_VERSION`]).
pub fn ours() -> Version {
    parse(contract::CONTRACT_VERSION).expect("CONTRACT_VERSION is major.minor")
}

/// What a request's header says, checked against `speaks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Served: the header's version (1.0 when absent), and whether it was sent.
    Accepted { version: Version, declared: bool },
    /// Another major: refused.
    Unsupported { version: Version, speaks: Version },
    /// Not `major.minor`: refused; the header as received.
    Invalid { header: String, speaks: Version },
}

/// Checks a request's `Bridge-Schema-Version` header (`None`: absent) against `speaks`.
pub fn check(header: Option<&str>, speaks: Version) -> Checked {
    let Some(text) = header else {
        return Checked::Accepted {
            version: UNDECLARED,
            declared: false,
        };
    };
    match parse(text) {
        Some(version) if version.major == speaks.major => Checked::Accepted {
            version,
            declared: true,
        },
        Some(version) => Checked::Unsupported { version, speaks },
        None => Checked::Invalid {
            header: text.to_string(),
            speaks,
        },
    }
}

impl Checked {
    /// The metric label against the version checked against (`speaks`): `<major>.<minor>`
    /// for the minors up to `speaks` (1.0 also when the header is absent), `<major>.newer` for
    /// a later minor, [`LABEL_UNSUPPORTED`], [`LABEL_INVALID`]: the values of [`labels`].
    pub fn label(&self, speaks: Version) -> String {
        match self {
            Checked::Accepted { version, .. } if version.minor > speaks.minor => {
                format!("{}.newer", version.major)
            }
            Checked::Accepted { version, .. } => version.to_string(),
            Checked::Unsupported { .. } => LABEL_UNSUPPORTED.into(),
            Checked::Invalid { .. } => LABEL_INVALID.into(),
        }
    }

    /// What the request's log span says: the version (`1.0` when the header is absent), or an
    /// unparsable header as sent, cut to 16 bytes.
    pub fn span_value(&self) -> String {
        match self {
            Checked::Accepted { version, .. } | Checked::Unsupported { version, .. } => {
                version.to_string()
            }
            Checked::Invalid { header, .. } => truncate(header, SPAN_BYTES).to_string(),
        }
    }

    /// The refusal, if the version is refused: reason `UNSUPPORTED_VERSION`, one field error
    /// naming what the header said and what this engine speaks.
    pub fn rejection(&self) -> Option<Rejection> {
        let error = match self {
            Checked::Accepted { .. } => return None,
            Checked::Unsupported { version, speaks } => field_error(
                FIELD,
                RULE_SUPPORTED_MAJOR,
                format!(
                    "{FIELD} {version} names contract major {}; this engine speaks contract \
                     {speaks} (major {}: any {}.x is served, absent = 1.0)",
                    version.major, speaks.major, speaks.major
                ),
            ),
            Checked::Invalid { header, speaks } => field_error(
                FIELD,
                RULE_FORMAT,
                format!(
                    "{FIELD} {} is not major.minor (e.g. \"{speaks}\"); this engine speaks \
                     contract {speaks} (major {}: any {}.x is served, absent = 1.0)",
                    echo(header),
                    speaks.major,
                    speaks.major
                ),
            ),
        };
        Some(Rejection {
            reason: RejectReason::UnsupportedVersion,
            errors: vec![error],
        })
    }
}

/// Every label value the metric can have against `speaks`, in order (pre-created at 0).
pub fn labels(speaks: Version) -> Vec<String> {
    let mut out: Vec<String> = (0..=speaks.minor)
        .map(|minor| format!("{}.{minor}", speaks.major))
        .collect();
    out.push(format!("{}.newer", speaks.major));
    out.push(LABEL_UNSUPPORTED.into());
    out.push(LABEL_INVALID.into());
    out
}

#[cfg(test)]
mod tests;
