//! # o2c-mapping
//!
//! Vendor payloads mapped by data: a mapping file says how a Salesforce opportunity, a
//! Stripe payment or a bank's camt.054 notification becomes o2c's canonical event, with
//! JSONPath (RFC 9535, the `serde_json_path` crate) for field paths, value maps, defaults
//! and a few conversions — no code. Pure: no I/O but reading the mapping files, no AWS.
//!
//! Why JSONPath: it is an IETF standard (RFC 9535) with a maintained, conformance-tested
//! Rust implementation; it only selects (no functions that compute or loop), so a mapping
//! file is data an integrator can review, and every transformation beyond selection is one
//! of a handful of named conversions whose rules are stated here (exact decimals, minor
//! units by the currency's ISO 4217 exponent, UTC timestamps).
//!
//! Layout:
//! - [`spec`]: the mapping file format, read and checked when loaded;
//! - [`engine`]: applying a mapping: events, or every failing path;
//! - [`xml`]: XML documents (ISO 20022) read as JSON for the same paths;
//! - [`registry`]: the mappings of a directory, listed, and reloaded when a file changes;
//! - [`webhooks`]: vendors' webhook signature schemes (Stripe, DocuSign Connect);
//! - [`ingest`]: a mapped payload as `PutEvents` entries, or the rejection it is parked as.

pub mod engine;
pub mod ingest;
pub mod registry;
pub mod spec;
pub mod webhooks;
pub mod xml;

pub use engine::{MapIssue, Mapped};
pub use registry::Registry;
pub use spec::{Format, Mapping, SpecError};

/// Reads a document in `format`, or says why it cannot be read.
pub fn parse_input(format: Format, bytes: &[u8]) -> Result<serde_json::Value, MapIssue> {
    let refuse = |m: String| MapIssue { field: String::new(), path: "$".into(), message: m };
    match format {
        Format::Json => {
            let doc = serde_json::from_slice(bytes).map_err(|e| refuse(format!("not JSON: {e}")))?;
            if let Some(n) = inexact_number(bytes) {
                return Err(refuse(format!(
                    "the number {n} has more than 15 significant digits, more than a JSON number carries exactly: send it as a string"
                )));
            }
            Ok(doc)
        }
        Format::Xml => xml::to_json(bytes).map_err(|e| refuse(format!("not XML: {e}"))),
    }
}

/// The first number literal in a JSON text with more significant digits than an `f64`
/// holds exactly (15), if any: such a number would reach the mapping already rounded.
fn inexact_number(bytes: &[u8]) -> Option<String> {
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                i += 1;
            }
            let token = &bytes[start..i];
            let mantissa = token.split(|c| *c == b'e' || *c == b'E').next().unwrap_or_default();
            let digits: Vec<u8> = mantissa.iter().copied().filter(u8::is_ascii_digit).collect();
            let first = digits.iter().position(|d| *d != b'0');
            let last = digits.iter().rposition(|d| *d != b'0');
            if let (Some(f), Some(l)) = (first, last)
                && l - f + 1 > 15
            {
                return Some(String::from_utf8_lossy(token).into_owned());
            }
            continue;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn when_a_json_number_has_more_digits_than_a_double_holds_should_refuse_the_document() {
        assert!(parse_input(Format::Json, br#"{"a": 100.0000000000000001}"#).unwrap_err().message.contains("100.0000000000000001"));
        assert!(parse_input(Format::Json, br#"{"a": 1250000.00, "b": "100.0000000000000001", "c": 1e300}"#).is_ok());
        assert!(parse_input(Format::Json, br#"{"s": "x\"1234567890123456789", "n": 12345678901234.5}"#).is_ok());
        assert!(parse_input(Format::Json, br#"[12345678901234567]"#).is_err());
    }
}
