//! Field readers shared by the platform adapters: ids and money that arrive as either
//! strings or numbers, timestamps in each platform's format, and empty-string cleanup.

use crate::IngestError;
use chrono::{DateTime, NaiveDateTime, Utc};
use lastmile_core::{decimal_to_minor, GeoPoint};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A JSON scalar kept as text: platforms send money as `"199.00"` or `199`, ids as
/// numbers or strings. Integers keep every digit (read as `u64`/`i64`, never via `f64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub text: String,
    /// True when the JSON held a non-integer number, which can never be an exact id.
    pub from_float: bool,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar { text: v.to_owned(), from_float: false })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar { text: v.to_string(), from_float: false })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar { text: v.to_string(), from_float: false })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        // Rust's `Display` for f64 never uses exponent notation, so the text stays a
        // plain decimal that `decimal_to_minor` understands.
        Ok(Scalar { text: v.to_string(), from_float: true })
    }
}

/// An id as the platform's exact digits (or its own string id). Floats are refused:
/// they would already have lost digits of a 64-bit id.
pub(crate) fn id_text(field: &str, value: Option<&Scalar>) -> Result<String, IngestError> {
    match value {
        Some(s) if !s.from_float && !s.text.trim().is_empty() => Ok(s.text.trim().to_owned()),
        Some(_) => Err(IngestError::malformed(format!("`{field}` is not an exact id"))),
        None => Err(IngestError::malformed(format!("`{field}` is missing"))),
    }
}

/// A money amount in integer minor units of `currency`.
pub(crate) fn minor(field: &str, value: &Scalar, currency: &str) -> Result<i64, IngestError> {
    decimal_to_minor(&value.text, currency)
        .ok_or_else(|| IngestError::malformed(format!("`{field}` is not a decimal amount: {:?}", value.text)))
}

/// Like [`minor`], zero when the platform left the field out.
pub(crate) fn minor_or_zero(field: &str, value: Option<&Scalar>, currency: &str) -> Result<i64, IngestError> {
    value.map_or(Ok(0), |v| minor(field, v, currency))
}

/// Like [`minor`], an error when the field is absent.
pub(crate) fn required_minor(field: &str, value: Option<&Scalar>, currency: &str) -> Result<i64, IngestError> {
    let value = value.ok_or_else(|| IngestError::malformed(format!("`{field}` is missing")))?;
    minor(field, value, currency)
}

/// The ISO 4217 code, upper case; an order without one cannot be priced.
pub(crate) fn currency(field: &str, value: Option<&str>) -> Result<String, IngestError> {
    match value.map(str::trim) {
        Some(c) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => Ok(c.to_ascii_uppercase()),
        Some(c) => Err(IngestError::malformed(format!("`{field}` is not a currency code: {c:?}"))),
        None => Err(IngestError::malformed(format!("`{field}` is missing"))),
    }
}

/// Trimmed text, or `None` for absent and blank values (platforms send `""` for "none").
pub(crate) fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// "First Last" from optional parts, `None` when both are blank.
pub(crate) fn full_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let parts: Vec<String> = [first, last].into_iter().filter_map(non_empty).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Coordinates only when both are present and on the earth; anything else is "unknown".
pub(crate) fn coordinates(lat: Option<&Scalar>, lng: Option<&Scalar>) -> (Option<f64>, Option<f64>) {
    let parse = |s: Option<&Scalar>| s.and_then(|s| s.text.trim().parse::<f64>().ok());
    match (parse(lat), parse(lng)) {
        (Some(lat), Some(lng)) if GeoPoint::new(lat, lng).is_ok() => (Some(lat), Some(lng)),
        _ => (None, None),
    }
}

/// An RFC 3339 timestamp (Shopify), absent or blank meaning unknown.
pub(crate) fn rfc3339(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, IngestError> {
    let Some(text) = non_empty(value) else { return Ok(None) };
    DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| IngestError::malformed(format!("`{field}` is not an RFC 3339 time: {text:?}")))
}

/// An RFC 2822 timestamp (BigCommerce V2: "Tue, 05 Mar 2019 21:40:11 +0000").
pub(crate) fn rfc2822(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, IngestError> {
    let Some(text) = non_empty(value) else { return Ok(None) };
    DateTime::parse_from_rfc2822(&text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| IngestError::malformed(format!("`{field}` is not an RFC 2822 time: {text:?}")))
}

/// A WooCommerce `*_gmt` time: "2017-03-22T19:28:02", UTC without a suffix. A full
/// RFC 3339 value is accepted too.
pub(crate) fn naive_utc(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, IngestError> {
    let Some(text) = non_empty(value) else { return Ok(None) };
    if let Ok(t) = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(Some(t.and_utc()));
    }
    DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| IngestError::malformed(format!("`{field}` is not a UTC time: {text:?}")))
}

/// Parse a JSON body into `T`, mapping any failure to `Malformed` (never a panic).
pub(crate) fn from_json<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, IngestError> {
    serde_json::from_slice(body).map_err(|e| IngestError::malformed(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(json: &str) -> Scalar {
        serde_json::from_str(json).expect("scalar")
    }

    #[test]
    fn big_integers_keep_every_digit() {
        assert_eq!(scalar("820982911946154508").text, "820982911946154508");
        assert_eq!(id_text("id", Some(&scalar("18446744073709551615"))).expect("u64"), "18446744073709551615");
        assert!(id_text("id", Some(&scalar("8.2e17"))).is_err());
        assert!(id_text("id", None).is_err());
    }

    #[test]
    fn money_reads_strings_and_numbers() {
        assert_eq!(minor("p", &scalar("\"89.99\""), "USD").expect("str"), 8999);
        assert_eq!(minor("p", &scalar("3"), "USD").expect("int"), 300);
        assert_eq!(minor("p", &scalar("2.5"), "USD").expect("float"), 250);
        assert_eq!(minor("p", &scalar("1e-7"), "USD").expect("tiny"), 0);
        assert!(minor("p", &scalar("\"abc\""), "USD").is_err());
        assert!(minor("p", &scalar("1e300"), "USD").is_err());
    }

    #[test]
    fn times_in_each_platform_format() {
        let want = "2017-03-22T19:28:02Z";
        assert_eq!(
            naive_utc("t", Some("2017-03-22T19:28:02")).expect("woo").expect("some").to_rfc3339(),
            "2017-03-22T19:28:02+00:00"
        );
        assert_eq!(rfc3339("t", Some(want)).expect("rfc3339").expect("some").to_rfc3339(), "2017-03-22T19:28:02+00:00");
        let bc = rfc2822("t", Some("Tue, 05 Mar 2019 21:40:11 +0000")).expect("rfc2822").expect("some");
        assert_eq!(bc.to_rfc3339(), "2019-03-05T21:40:11+00:00");
        assert_eq!(rfc2822("t", Some("")).expect("blank"), None);
        assert!(rfc3339("t", Some("yesterday")).is_err());
    }

    #[test]
    fn coordinates_need_both_and_a_valid_point() {
        assert_eq!(coordinates(Some(&scalar("60.1")), Some(&scalar("24.9"))), (Some(60.1), Some(24.9)));
        assert_eq!(coordinates(Some(&scalar("\"60.1\"")), None), (None, None));
        assert_eq!(coordinates(Some(&scalar("91")), Some(&scalar("0"))), (None, None));
    }

    #[test]
    fn currency_codes_are_upper_case_iso() {
        assert_eq!(currency("c", Some("usd")).expect("usd"), "USD");
        assert!(currency("c", Some("dollars")).is_err());
        assert!(currency("c", None).is_err());
    }
}
