//! Money: exact decimal amounts with at most two decimal places.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of decimal places every amount is kept at.
pub const SCALE: u32 = 2;

/// Why a decimal is not a valid amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// More than two decimal places.
    #[error("must have at most 2 decimal places")]
    TooPrecise,
    /// Below zero.
    #[error("must be non-negative")]
    Negative,
    /// Too large to be represented.
    #[error("is out of range")]
    OutOfRange,
}

/// A non-negative amount of money, exact, always carried at two decimal
/// places (so `0.1 + 0.2` is `0.30`). Serialized as a JSON number that
/// keeps its digits (`1500.00`), never through a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(Decimal::from_parts(0, 0, 0, false, SCALE));

    /// An amount from a decimal: non-negative with at most two decimal
    /// places (trailing zeros beyond them are fine: `1.500` is `1.50`).
    pub fn new(value: Decimal) -> Result<Self, MoneyError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative);
        }
        let normalized = value.normalize();
        if normalized.scale() > SCALE {
            return Err(MoneyError::TooPrecise);
        }
        let mut v = normalized;
        v.rescale(SCALE);
        if v.normalize() != normalized {
            return Err(MoneyError::OutOfRange);
        }
        Ok(Self(v))
    }

    /// An amount from a whole number of cents.
    pub fn from_cents(cents: u64) -> Self {
        Self(Decimal::new(i64::try_from(cents).unwrap_or(i64::MAX), SCALE))
    }

    /// The decimal value (scale 2).
    pub fn value(self) -> Decimal {
        self.0
    }

    /// Whether the amount is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Self::rescaled)
    }

    /// `self - other`, or `None` when the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        if other.0 > self.0 {
            return None;
        }
        self.0.checked_sub(other.0).map(Self::rescaled)
    }

    fn rescaled(mut v: Decimal) -> Money {
        v.rescale(SCALE);
        Money(v)
    }
}

impl Default for Money {
    fn default() -> Self {
        Self::ZERO
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = parse_decimal(s).ok_or(MoneyError::OutOfRange)?;
        Money::new(d)
    }
}

/// Parses a JSON number's text (plain or scientific) into an exact decimal.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => scientific_exact(mantissa, exponent),
        None => Decimal::from_str_exact(text).ok(),
    }
}

/// `mantissa` × 10^`exponent`, exactly or not at all: a mantissa with
/// more digits than a decimal holds, or a result that does not fit, is
/// `None` (never rounded, unlike `Decimal::from_scientific`).
fn scientific_exact(mantissa: &str, exponent: &str) -> Option<Decimal> {
    let mut value = Decimal::from_str_exact(mantissa).ok()?;
    let exponent: i32 = exponent.parse().ok()?;
    if exponent >= 0 {
        if exponent > 28 {
            return None;
        }
        for _ in 0..exponent {
            value = value.checked_mul(Decimal::TEN)?;
        }
    } else {
        let scale = value.scale().checked_add(exponent.unsigned_abs())?;
        if scale > 28 {
            return None;
        }
        value.set_scale(scale).ok()?;
    }
    Some(value)
}

/// Serializes an exact decimal as a JSON number keeping its digits.
pub(crate) fn serialize_decimal<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; DECIMAL_TEXT_MAX];
    let number = match decimal_text(value, &mut buffer) {
        Some(text) => serde_json::Number::from_str(text),
        // Negative, or beyond 64 bits: rare, so written the general way.
        None => serde_json::Number::from_str(&value.to_string()),
    };
    number.map_err(serde::ser::Error::custom)?.serialize(s)
}

/// Room for the text of a decimal with a 64-bit mantissa: 20 digits, up
/// to 28 places, a point and a leading zero.
const DECIMAL_TEXT_MAX: usize = 52;

/// The text `Decimal`'s `Display` gives (`1500.00`, `0.05`, `7`), written
/// into `buffer` without allocating, for the decimals every answer and
/// event carries: non-negative, with a mantissa below 2^64. `None` for
/// any other (the caller formats those itself).
fn decimal_text<'b>(value: &Decimal, buffer: &'b mut [u8; DECIMAL_TEXT_MAX]) -> Option<&'b str> {
    if value.is_sign_negative() {
        return None;
    }
    let mut mantissa = u64::try_from(value.mantissa()).ok()?;
    let scale = value.scale() as usize;
    let mut at = buffer.len();
    let mut digits = 0;
    // Digits from the last; the point after `scale` of them; at least one
    // digit before the point.
    while mantissa > 0 || digits <= scale {
        if digits == scale && scale > 0 {
            at -= 1;
            buffer[at] = b'.';
        }
        at -= 1;
        buffer[at] = b'0' + (mantissa % 10) as u8;
        mantissa /= 10;
        digits += 1;
    }
    std::str::from_utf8(&buffer[at..]).ok()
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_decimal(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let amount = Amount::deserialize(d)?;
        Money::new(amount.0).map_err(|e| serde::de::Error::custom(format!("amount {e}")))
    }
}

/// A decimal read exactly from a JSON number (strings, floats rounded by a
/// parser, and other types are rejected). Unlike [`Money`] it may be
/// negative or too precise: request validation reports those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(d)?;
        // The number's own text, as sent (`arbitrary_precision`).
        parse_decimal(number.as_str())
            .map(Amount)
            .ok_or_else(|| serde::de::Error::custom("number is out of range for an amount"))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_decimal(&self.0, s)
    }
}

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        number_schema("An exact amount with at most 2 decimal places (JSON number, e.g. 1500.00).")
    }
}

impl utoipa::ToSchema for Money {}

impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        number_schema("An exact decimal amount (JSON number); must be positive with at most 2 decimal places.")
    }
}

impl utoipa::ToSchema for Amount {}

fn number_schema(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .multiple_of(Some(0.01))
        .description(Some(description))
        .examples([serde_json::json!(1500.00)])
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The text written without allocating is `Display`'s, for every
        /// decimal it takes, at every scale.
        #[test]
        fn decimal_text_is_display(mantissa in any::<u64>(), scale in 0u32..=28, negative in any::<bool>()) {
            let value = Decimal::from_i128_with_scale(i128::from(mantissa) * if negative { -1 } else { 1 }, scale);
            let mut buffer = [0u8; DECIMAL_TEXT_MAX];
            match decimal_text(&value, &mut buffer) {
                Some(text) => prop_assert_eq!(text, value.to_string()),
                None => prop_assert!(value.is_sign_negative()),
            }
            let json = serde_json::to_string(&Amount(value)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(json, value.to_string());
        }
    }

    #[test]
    fn decimal_text_of_small_and_large_values() {
        for text in [
            "0",
            "0.00",
            "0.05",
            "1.50",
            "1500.00",
            "18446744073709551615",
            "0.0000000000000000000000000001",
        ] {
            let value = Decimal::from_str(text).unwrap();
            let mut buffer = [0u8; DECIMAL_TEXT_MAX];
            assert_eq!(decimal_text(&value, &mut buffer), Some(text));
        }
        // Beyond 64 bits and negative values take the general path, same text.
        for text in ["18446744073709551616", "-1.50", "79228162514264337593543950335"] {
            let value = Decimal::from_str(text).unwrap();
            let mut buffer = [0u8; DECIMAL_TEXT_MAX];
            assert_eq!(decimal_text(&value, &mut buffer), None);
            assert_eq!(serde_json::to_string(&Amount(value)).unwrap(), text);
        }
    }

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn sums_exactly_at_two_places() {
        let sum = m("0.1").checked_add(m("0.2")).unwrap();
        assert_eq!(serde_json::to_string(&sum).unwrap(), "0.30");
        assert_eq!(m("1000").to_string(), "1000.00");
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!("0.001".parse::<Money>(), Err(MoneyError::TooPrecise));
        assert_eq!("-1".parse::<Money>(), Err(MoneyError::Negative));
        assert_eq!(m("1.500"), m("1.5"));
        assert!(m("1").checked_sub(m("1.01")).is_none());
    }

    #[test]
    fn json_numbers_keep_digits() {
        let a: Amount = serde_json::from_str("12345678901234567.89").unwrap();
        assert_eq!(a.0.to_string(), "12345678901234567.89");
        let e: Amount = serde_json::from_str("1.5e2").unwrap();
        assert_eq!(e.0, Decimal::new(150, 0));
        for (text, exact) in [
            ("1e2", "100"),
            ("1E+2", "100"),
            ("125e-2", "1.25"),
            ("1e-2", "0.01"),
            ("0.5e0", "0.5"),
        ] {
            let a: Amount = serde_json::from_str(text).unwrap();
            assert_eq!(a.0, exact.parse::<Decimal>().unwrap(), "{text}");
        }
        // More digits than a decimal holds, or out of range: refused, never rounded.
        for text in [
            "0.0099999999999999999999999999999e0",
            "0.00999999999999999999999999999e0",
            "1e-29",
            "1e29",
            "1e400",
        ] {
            assert!(serde_json::from_str::<Amount>(text).is_err(), "{text}");
        }
        assert!(serde_json::from_str::<Amount>("\"10\"").is_err());
        assert!(serde_json::from_str::<Amount>("true").is_err());
    }
}
