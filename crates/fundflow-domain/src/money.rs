//! Exact decimal money: strict parsing of decimal strings, conversion to USD, and the one
//! formatting rule (an amount is written at its currency's minor-unit scale).
//!
//! There is no float anywhere here: amounts are `rust_decimal::Decimal` (96-bit integer and a
//! scale), every sum and product is checked, and rounding happens in exactly one place.

use rust_decimal::{Decimal, RoundingStrategy};

/// Decimals of a USD equivalent: conversions round half-even to cents.
pub const USD_SCALE: u32 = 2;

/// Longest decimal string accepted; `Decimal` holds at most 28-29 significant digits anyway.
const DECIMAL_STRING_LEN_MAX: usize = 40;

/// Why a decimal string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not of the form `-?[0-9]+(.[0-9]+)?`: exponents, `+`, spaces, `_`, `NaN` are all refused.
    Syntax,
    /// More significant digits than an exact decimal can hold.
    OutOfRange,
}

/// Parses a plain decimal string (`"31500.00"`, `"-1"`, `"0.1538"`) without any rounding.
pub fn parse_decimal(text: &str) -> Result<Decimal, DecimalError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if text.len() > DECIMAL_STRING_LEN_MAX || !all_digits(whole) || !fraction.is_none_or(all_digits)
    {
        return Err(DecimalError::Syntax);
    }
    Decimal::from_str_exact(text).map_err(|_| DecimalError::OutOfRange)
}

/// The USD equivalent of `value` at `usd_per_unit`, rounded half-even to cents; `None` on
/// overflow.
pub fn to_usd(value: Decimal, usd_per_unit: Decimal) -> Option<Decimal> {
    value
        .checked_mul(usd_per_unit)
        .map(|usd| usd.round_dp_with_strategy(USD_SCALE, RoundingStrategy::MidpointNearestEven))
}

/// Writes `value` with exactly `scale` decimals (`"5000"` JPY, `"31500.00"` USD). Values in the
/// ledger never have more decimals than their currency allows, so this never rounds; if a value
/// did, it is rounded half-even rather than truncated.
pub fn format_at_scale(value: Decimal, scale: u32) -> String {
    at_scale(value, scale).to_string()
}

/// `value` rounded half-even to `scale` decimals and holding exactly that many, so that it
/// displays as [`format_at_scale`] writes it (for writers that should not allocate a `String`
/// per amount).
pub fn at_scale(value: Decimal, scale: u32) -> Decimal {
    let mut value = value.round_dp_with_strategy(scale, RoundingStrategy::MidpointNearestEven);
    value.rescale(scale);
    value
}

/// Writes `value` as its `Display` does (sign, digits, exactly its scale of decimals), without
/// the formatting machinery: the canonical form writes millions of amounts, and going through
/// `fmt` was most of the model digest's time. Equal to `value.to_string()` for every decimal,
/// negative zero included (a test says so).
pub fn write_decimal(out: &mut impl std::io::Write, value: Decimal) -> std::io::Result<()> {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value.mantissa().unsigned_abs()).as_bytes();
    // `Display` writes no digit for a zero mantissa before padding to the scale.
    let digits = if value.mantissa() == 0 {
        &[][..]
    } else {
        digits
    };
    let scale = value.scale() as usize;
    // At most a sign, 29 digits, a point and 28 zeros of padding.
    let mut text = [b'0'; 64];
    let mut len = 0;
    if value.is_sign_negative() {
        text[0] = b'-';
        len = 1;
    }
    if scale == 0 {
        if digits.is_empty() {
            len += 1; // "0"
        } else {
            text[len..len + digits.len()].copy_from_slice(digits);
            len += digits.len();
        }
    } else {
        let whole = digits.len().saturating_sub(scale);
        if whole == 0 {
            len += 1; // "0"
        } else {
            text[len..len + whole].copy_from_slice(&digits[..whole]);
            len += whole;
        }
        text[len] = b'.';
        len += 1;
        let fraction = &digits[whole..];
        len += scale - fraction.len(); // leading zeros of the fraction, already in `text`
        text[len..len + fraction.len()].copy_from_slice(fraction);
        len += fraction.len();
    }
    out.write_all(&text[..len])
}

/// Writes a quantity without trailing zeros (`"210000"`, `"2.5"`).
pub fn format_quantity(value: Decimal) -> String {
    value.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, DecimalError>) {
        let got = parse_decimal(text).map(|d| d.to_string());
        assert_eq!(
            got.as_deref().map_err(|e| *e),
            expected,
            "parse_decimal({text:?})"
        );
    }

    #[test]
    fn plain_decimals_parse_exactly() {
        check("31500.00", Ok("31500.00"));
        check("0.1538", Ok("0.1538"));
        check("-12", Ok("-12"));
        check("007", Ok("7"));
        check(
            "79228162514264337593543950335",
            Ok("79228162514264337593543950335"),
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "", "-", ".5", "5.", "1e3", "+1", " 1", "1 ", "1_000", "NaN", "1,5", "--1",
        ] {
            check(bad, Err(DecimalError::Syntax));
        }
        check(
            "79228162514264337593543950336",
            Err(DecimalError::OutOfRange),
        );
        check(&"9".repeat(41), Err(DecimalError::Syntax));
    }

    #[test]
    fn usd_conversion_rounds_half_even_to_cents() {
        let d = |s: &str| parse_decimal(s).unwrap();
        assert_eq!(to_usd(d("100"), d("0.00125")), Some(d("0.12"))); // 0.125 -> 0.12
        assert_eq!(to_usd(d("100"), d("0.00135")), Some(d("0.14"))); // 0.135 -> 0.14
        assert_eq!(to_usd(d("5000"), d("0.1538")), Some(d("769.00")));
        assert_eq!(to_usd(Decimal::MAX, d("2")), None);
    }

    #[test]
    fn write_decimal_writes_what_display_writes() {
        let mut cases = vec![
            Decimal::ZERO,
            -Decimal::ZERO,
            Decimal::new(0, 2),
            -Decimal::new(0, 2),
            Decimal::new(5, 0),
            Decimal::new(-5, 3),
            Decimal::new(123, 5),
            Decimal::new(3_150_000, 2),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from_i128_with_scale(1, 28),
            Decimal::from_i128_with_scale(-79_228_162_514_264_337_593_543_950_335, 28),
            Decimal::from_i128_with_scale(0, 28),
        ];
        // Every scale with a few mantissas of every length.
        for scale in 0..=28 {
            for mantissa in [
                1_i128,
                9,
                10,
                99,
                12_345,
                1_000_000_007,
                i128::from(u64::MAX),
            ] {
                cases.push(Decimal::from_i128_with_scale(mantissa, scale));
                cases.push(Decimal::from_i128_with_scale(-mantissa, scale));
            }
        }
        for value in cases {
            let mut written = Vec::new();
            write_decimal(&mut written, value).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                value.to_string(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn formats_at_the_currency_scale() {
        let d = |s: &str| parse_decimal(s).unwrap();
        assert_eq!(format_at_scale(d("31500"), 2), "31500.00");
        assert_eq!(format_at_scale(d("5000"), 0), "5000");
        assert_eq!(format_at_scale(d("1.5"), 3), "1.500");
        assert_eq!(format_quantity(d("210000.000")), "210000");
    }
}
