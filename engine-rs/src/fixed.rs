//! Exact fixed-point arithmetic: every price and quantity inside the engine is an `i64` count
//! of 1e-8 units. Conversions to and from the wire `Decimal {units, scale}` never round
//! silently: a value that does not fit is an error.

use crate::proto::v1::Decimal;

/// Decimal places of the engine's fixed point.
pub const SCALE: u32 = 8;
const ONE: i64 = 100_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    #[error("has {0} decimal places; at most 8 are supported")]
    TooPrecise(u32),
    #[error("is too large for 64-bit fixed point")]
    Overflow,
    #[error("is not a decimal number")]
    Syntax,
}

/// Wire decimal -> fixed point.
pub fn from_decimal(d: &Decimal) -> Result<i64, FixedError> {
    if d.scale > SCALE {
        return Err(FixedError::TooPrecise(d.scale));
    }
    let factor = 10_i64.pow(SCALE - d.scale);
    d.units.checked_mul(factor).ok_or(FixedError::Overflow)
}

/// Fixed point -> wire decimal (always scale 8; exact).
pub fn to_decimal(v: i64) -> Decimal {
    Decimal {
        units: v,
        scale: SCALE,
    }
}

/// Parses "101.25" (config files) into fixed point.
pub fn parse(s: &str) -> Result<i64, FixedError> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(FixedError::Syntax);
    }
    let places = u32::try_from(frac_part.len()).map_err(|_| FixedError::Overflow)?;
    let units: i64 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| FixedError::Overflow)?;
    let v = from_decimal(&Decimal {
        units,
        scale: places,
    })?;
    Ok(if neg { -v } else { v })
}

/// Price x quantity in 1e-16 units (cannot overflow i128).
pub fn notional_e16(px: i64, qty: i64) -> i128 {
    i128::from(px) * i128::from(qty)
}

/// Volume-weighted average price: notional (1e-16) / qty (1e-8) -> 1e-8, rounded half-even.
pub fn avg_price(notional_e16: i128, qty: i64) -> i64 {
    if qty == 0 {
        return 0;
    }
    let q = i128::from(qty);
    let (quot, rem) = (notional_e16 / q, notional_e16 % q);
    let twice = rem.abs() * 2;
    let round_up = twice > q.abs() || (twice == q.abs() && quot % 2 != 0);
    let v = if round_up {
        quot + notional_e16.signum() * q.signum()
    } else {
        quot
    };
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Fixed point of a whole number (tests and config defaults).
pub const fn units(n: i64) -> i64 {
    n * ONE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wire decimals convert exactly and refuse what they cannot represent.
    #[test]
    fn decimal_conversion_is_exact() {
        let d = Decimal {
            units: 10125,
            scale: 2,
        };
        assert_eq!(from_decimal(&d), Ok(10_125_000_000));
        assert_eq!(
            from_decimal(&Decimal { units: 1, scale: 9 }),
            Err(FixedError::TooPrecise(9))
        );
        assert_eq!(
            from_decimal(&Decimal {
                units: i64::MAX,
                scale: 0
            }),
            Err(FixedError::Overflow)
        );
    }

    /// Config strings parse to the same fixed point as the wire form.
    #[test]
    fn parse_strings() {
        assert_eq!(parse("101.25"), Ok(10_125_000_000));
        assert_eq!(parse("-0.5"), Ok(-50_000_000));
        assert_eq!(parse("7"), Ok(units(7)));
        assert_eq!(parse("1.123456789"), Err(FixedError::TooPrecise(9)));
        assert_eq!(parse("abc"), Err(FixedError::Syntax));
        assert_eq!(parse(".5"), Err(FixedError::Syntax));
    }

    /// The average price rounds half to even at the 8th decimal.
    #[test]
    fn average_price_rounds_half_even() {
        // 1 @ 100 + 2 @ 101 = 302 / 3 = 100.666666666... -> 100.66666667
        let n = notional_e16(units(100), units(1)) + notional_e16(units(101), units(2));
        assert_eq!(avg_price(n, units(3)), 10_066_666_667);
        // exact halves: 0.000000005 -> round to even (0) ; 0.000000015 -> 0.00000002
        assert_eq!(avg_price(5, 10), 0);
        assert_eq!(avg_price(15, 10), 2);
        assert_eq!(avg_price(0, 0), 0);
    }
}
