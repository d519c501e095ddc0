//! Order signatures (pure): the three headers, the signed bytes and the Ed25519 check.
//!
//! Signed bytes = `SIGNING_DOMAIN \n subject \n signed_at \n payload` (the Python signer is
//! `bridge/security/signing.py`); headers `Bridge-Signer` (public user NKey),
//! `Bridge-Signed-At` (Unix ns, decimal) and `Bridge-Signature` (base64url, no padding).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::{KeyPair, KeyPairType};

use super::replay::SignatureBytes;
use super::RefusalKind;
use crate::contract;
use crate::validate::echo;

/// The signature headers of one message, as received (any may be missing).
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    pub signer: Option<&'a str>,
    pub signed_at: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// A signature that verified: who, when, and its bytes (the replay key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub signer: String,
    pub signed_at_ns: i64,
    pub signature: SignatureBytes,
}

/// What is signed for one message.
pub fn signed_bytes(subject: &str, signed_at_ns: i64, payload: &[u8]) -> Vec<u8> {
    let head = format!("{}\n{subject}\n{signed_at_ns}\n", contract::SIGNING_DOMAIN);
    let mut out = Vec::with_capacity(head.len() + payload.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the headers of `payload` sent to `subject`. On refusal: the kind and a text naming
/// the check and the values compared.
pub fn verify(
    subject: &str,
    payload: &[u8],
    headers: &Headers<'_>,
) -> Result<Signed, (RefusalKind, String)> {
    let bad = |text: String| Err((RefusalKind::BadSignature, text));
    let Some(signature) = headers.signature else {
        let text = match headers.signer {
            None => format!("unsigned: no {} header", contract::HEADER_SIGNATURE),
            Some(s) => format!(
                "unsigned: {} {} but no {} header",
                contract::HEADER_SIGNER,
                echo(s),
                contract::HEADER_SIGNATURE
            ),
        };
        return Err((RefusalKind::Unsigned, text));
    };
    let Some(signer) = headers.signer else {
        return bad(format!(
            "{} present but no {} header",
            contract::HEADER_SIGNATURE,
            contract::HEADER_SIGNER
        ));
    };
    let Some(signed_at) = headers.signed_at else {
        return bad(format!(
            "{} present but no {} header",
            contract::HEADER_SIGNATURE,
            contract::HEADER_SIGNED_AT
        ));
    };
    let Ok(signed_at_ns) = signed_at.trim().parse::<i64>() else {
        return bad(format!(
            "{} {} is not a decimal Unix time in ns",
            contract::HEADER_SIGNED_AT,
            echo(signed_at)
        ));
    };
    let key = match KeyPair::from_public_key(signer) {
        Ok(k) if k.key_pair_type() == KeyPairType::User => k,
        _ => {
            return bad(format!(
                "{} {} is not a public user NKey",
                contract::HEADER_SIGNER,
                echo(signer)
            ))
        }
    };
    let raw: SignatureBytes = match URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .ok()
        .and_then(|b| b.try_into().ok())
    {
        Some(raw) => raw,
        None => {
            return bad(format!(
                "{} {} is not 64 bytes of base64url",
                contract::HEADER_SIGNATURE,
                echo(signature)
            ))
        }
    };
    if key
        .verify(&signed_bytes(subject, signed_at_ns, payload), &raw)
        .is_err()
    {
        return bad(format!(
            "signature of {signer} does not verify over subject {subject}, signed_at \
             {signed_at_ns} and the {}-byte payload",
            payload.len()
        ));
    }
    Ok(Signed {
        signer: signer.to_string(),
        signed_at_ns,
        signature: raw,
    })
}
