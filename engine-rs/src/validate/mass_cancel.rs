//! Validation of a `MassCancelRequest` (pure): the contract's id rules (`[ids]` of
//! schemas/bridge/v1/contract.toml: account, symbol, request_id) and the side enum. Every bad
//! field is named with its rule, as for an order.

use super::{echo, field_error, valid_id, MAX_ACCOUNT_BYTES, MAX_SYMBOL_BYTES};
use crate::auth::entitlements::valid_account;
use crate::proto::v1::{self as pb, FieldError};
use crate::venue::MassCancelFilter;

/// `request_id`'s limit (`REQUEST_ID_PATTERN`: `[A-Za-z0-9_-]{0,64}`).
pub const MAX_REQUEST_ID_BYTES: usize = 64;

/// `SYMBOL_PATTERN`: `[A-Za-z0-9._/-]{1,32}`.
fn valid_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SYMBOL_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// The filter a valid request asks for, or every field that breaks a rule.
pub fn check_mass_cancel(req: &pb::MassCancelRequest) -> Result<MassCancelFilter, Vec<FieldError>> {
    let mut errors = Vec::new();
    if !valid_account(&req.account) {
        errors.push(field_error(
            "account",
            "pattern",
            format!(
                "{} must be 1-{MAX_ACCOUNT_BYTES} characters of [A-Za-z0-9_-], not starting \
                 with _",
                echo(&req.account)
            ),
        ));
    }
    if !req.symbol.is_empty() && !valid_symbol(&req.symbol) {
        errors.push(field_error(
            "symbol",
            "pattern",
            format!(
                "{} must be 1-{MAX_SYMBOL_BYTES} characters of [A-Za-z0-9._/-] (or empty: \
                 every symbol)",
                echo(&req.symbol)
            ),
        ));
    }
    let side = match pb::Side::try_from(req.side) {
        Ok(pb::Side::Unspecified) => None,
        Ok(s) => Some(s),
        Err(_) => {
            errors.push(field_error(
                "side",
                "enum",
                format!(
                    "must be BUY, SELL or UNSPECIFIED (both sides), got {}",
                    req.side
                ),
            ));
            None
        }
    };
    if !req.request_id.is_empty() && !valid_id(&req.request_id, MAX_REQUEST_ID_BYTES) {
        errors.push(field_error(
            "request_id",
            "pattern",
            format!(
                "{} must be 0-{MAX_REQUEST_ID_BYTES} characters of [A-Za-z0-9_-]",
                echo(&req.request_id)
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(MassCancelFilter {
        account: req.account.clone(),
        symbol: (!req.symbol.is_empty()).then(|| req.symbol.clone()),
        side,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(account: &str, symbol: &str, side: i32, request_id: &str) -> pb::MassCancelRequest {
        pb::MassCancelRequest {
            account: account.into(),
            symbol: symbol.into(),
            side,
            request_id: request_id.into(),
        }
    }

    fn rules(r: &pb::MassCancelRequest) -> Vec<(String, String)> {
        check_mass_cancel(r)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.rule))
            .collect()
    }

    /// The same rules as the contract's patterns, which the generated regexes state.
    #[test]
    fn agrees_with_the_contract_patterns() {
        let account = regex::Regex::new(crate::contract::ACCOUNT_PATTERN).unwrap();
        let symbol = regex::Regex::new(crate::contract::SYMBOL_PATTERN).unwrap();
        let request_id = regex::Regex::new(crate::contract::REQUEST_ID_PATTERN).unwrap();
        for s in [
            "",
            "A",
            "_x",
            "a.b",
            "BTC-USD",
            "EUR/USD",
            "x y",
            "é",
            "-a",
            &"a".repeat(32),
            &"a".repeat(33),
            &"a".repeat(64),
            &"a".repeat(65),
        ] {
            assert_eq!(valid_account(s), account.is_match(s), "account {s:?}");
            assert_eq!(valid_symbol(s), symbol.is_match(s), "symbol {s:?}");
            let id_ok = s.is_empty() || valid_id(s, MAX_REQUEST_ID_BYTES);
            assert_eq!(id_ok, request_id.is_match(s), "request_id {s:?}");
        }
    }

    #[test]
    fn valid_requests_give_their_filter() {
        let f = check_mass_cancel(&req("ACC-1", "", 0, "")).unwrap();
        assert_eq!(
            f,
            MassCancelFilter {
                account: "ACC-1".into(),
                symbol: None,
                side: None
            }
        );
        let f = check_mass_cancel(&req("ACC", "BTC-USD", pb::Side::Sell as i32, "r-1")).unwrap();
        assert_eq!(f.symbol.as_deref(), Some("BTC-USD"));
        assert_eq!(f.side, Some(pb::Side::Sell));
    }

    /// Every bad field is reported, each with its rule.
    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            rules(&req("_house", "a b", 9, "no.dots")),
            [
                ("account".into(), "pattern".into()),
                ("symbol".into(), "pattern".into()),
                ("side".into(), "enum".into()),
                ("request_id".into(), "pattern".into()),
            ]
        );
        assert_eq!(
            rules(&req("", "", 0, "")),
            [("account".to_string(), "pattern".to_string())]
        );
    }
}
