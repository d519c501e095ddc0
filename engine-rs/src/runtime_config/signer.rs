//! Who wrote a document revision (pure): its signature headers checked like an order's
//! (`auth::signature`: SIGNING_DOMAIN, the subject `$KV.bridge_config.<key>`, signed_at and
//! the payload), but with no signature window (documents are re-read long after they were
//! written) and no replay check (a revision is applied once, by its revision number).
//!
//! With entitlements (require_signatures on) the signer must be an identity of role
//! `operator`; an unsigned or badly signed revision is refused. Without them (benchmarks), a
//! signature present must still verify; an unsigned revision is taken, its signer "unsigned".

use async_nats::HeaderMap;

use crate::auth::signature::{self, Headers};
use crate::auth::{Entitlements, Role};
use crate::contract;
use crate::proto::v1::FieldError;
use crate::validate::field_error;

use super::documents::WHOLE;

/// The signer of an unsigned revision, as logged.
pub const UNSIGNED: &str = "unsigned";

/// The signer of `payload` written to `subject` with `headers`: "name (public key)", or
/// [`UNSIGNED`]; or why the revision is refused.
pub fn check(
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    entitlements: Option<&Entitlements>,
) -> Result<String, FieldError> {
    let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    let h = Headers {
        signer: get(contract::HEADER_SIGNER),
        signed_at: get(contract::HEADER_SIGNED_AT),
        signature: get(contract::HEADER_SIGNATURE),
    };
    if entitlements.is_none() && h.signature.is_none() && h.signer.is_none() {
        return Ok(UNSIGNED.to_string());
    }
    let signed = signature::verify(subject, payload, &h).map_err(|(_, text)| {
        let rule = if h.signature.is_none() {
            "unsigned"
        } else {
            "signature"
        };
        field_error(WHOLE, rule, text)
    })?;
    let Some(entitlements) = entitlements else {
        return Ok(signed.signer);
    };
    match entitlements.by_nkey(&signed.signer) {
        Some(identity) if identity.role == Role::Operator => {
            Ok(format!("{} ({})", identity.name, signed.signer))
        }
        Some(identity) => Err(field_error(
            WHOLE,
            "signer_role",
            format!(
                "signed by {} ({}), whose role is {}: only an operator may change the configuration",
                identity.name,
                signed.signer,
                identity.role.name()
            ),
        )),
        None => Err(field_error(
            WHOLE,
            "signer_role",
            format!(
                "signed by {}, which is no identity of the entitlements file",
                signed.signer
            ),
        )),
    }
}
