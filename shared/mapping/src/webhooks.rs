//! Vendors' webhook signatures, verified before a payload is read as anything: a vendor
//! that calls an HTTPS endpoint cannot send o2c's bearer key, but signs each message with
//! a secret shared with the firm. Schemes (from the vendors' documentation):
//!
//! - `stripe`: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!   (several `v1` while a secret rolls); a timestamp more than [`STRIPE_TOLERANCE_SECS`]
//!   from now is refused, so a captured message cannot be replayed later.
//! - `docusign`: `X-DocuSign-Signature-1` (… `-N`, one per active Connect key) = base64
//!   HMAC-SHA256(secret, body). DocuSign signs no timestamp: a replayed message is the same
//!   event (its id derives from the envelope), absorbed by idempotency.
//!
//! Comparisons are constant-time.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's default tolerance for the signed timestamp.
pub const STRIPE_TOLERANCE_SECS: i64 = 300;

/// The vendors whose schemes are known.
pub const SCHEMES: [&str; 2] = ["stripe", "docusign"];

fn mac(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else { return Vec::new() };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The header a scheme's signature travels in (lower case), to tell a signed request.
pub fn header(scheme: &str) -> Option<&'static str> {
    match scheme {
        "stripe" => Some("stripe-signature"),
        "docusign" => Some("x-docusign-signature-1"),
        _ => None,
    }
}

/// DocuSign Connect sends one `X-DocuSign-Signature-N` per active key; at most this many are read.
pub const DOCUSIGN_MAX_SIGNATURES: usize = 5;

/// The signature header values of a request under `scheme`, read with `get` (a
/// case-insensitive header lookup): Stripe's one header, DocuSign's numbered ones.
pub fn signatures(scheme: &str, get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    match scheme {
        "docusign" => (1..=DOCUSIGN_MAX_SIGNATURES).filter_map(|n| get(&format!("x-docusign-signature-{n}"))).collect(),
        other => header(other).and_then(get).into_iter().collect(),
    }
}

/// Verifies `body` under `scheme` with the signature header values given; `now` in unix
/// seconds. `Err` says why not (without the secret or the expected value).
pub fn verify(scheme: &str, signatures: &[&str], body: &[u8], secret: &str, now: i64) -> Result<(), String> {
    match scheme {
        "stripe" => {
            let header = signatures.first().ok_or("no Stripe-Signature header")?;
            let mut t = None;
            let mut v1 = Vec::new();
            for part in header.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = v.parse::<i64>().ok(),
                    Some(("v1", v)) => v1.extend(hex::decode(v).ok()),
                    _ => {}
                }
            }
            let t = t.ok_or("Stripe-Signature has no timestamp")?;
            if (now - t).abs() > STRIPE_TOLERANCE_SECS {
                return Err(format!("the signed timestamp is {} s from now (tolerance {STRIPE_TOLERANCE_SECS} s)", now - t));
            }
            let expected = mac(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
            if v1.iter().any(|s| bool::from(s.as_slice().ct_eq(&expected))) { Ok(()) } else { Err("no v1 signature matches".into()) }
        }
        "docusign" => {
            let expected = mac(secret.as_bytes(), &[body]);
            let engine = base64::engine::general_purpose::STANDARD;
            let matches = signatures.iter().filter_map(|s| engine.decode(s.trim()).ok()).any(|s| bool::from(s.as_slice().ct_eq(&expected)));
            if matches { Ok(()) } else { Err("no X-DocuSign-Signature matches".into()) }
        }
        other => Err(format!("unknown webhook scheme `{other}`")),
    }
}

/// Signs `body` as the vendor would (tests and `o2c` tooling that replays a webhook).
pub fn sign(scheme: &str, body: &[u8], secret: &str, now: i64) -> Option<String> {
    match scheme {
        "stripe" => Some(format!("t={now},v1={}", hex::encode(mac(secret.as_bytes(), &[now.to_string().as_bytes(), b".", body])))),
        "docusign" => Some(base64::engine::general_purpose::STANDARD.encode(mac(secret.as_bytes(), &[body]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn when_signature_headers_are_read_should_take_stripe_once_and_each_docusign_key() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(signatures("stripe", headers(&[("stripe-signature", "t=1,v1=aa")])), vec!["t=1,v1=aa"]);
        assert_eq!(signatures("docusign", headers(&[("x-docusign-signature-1", "a"), ("x-docusign-signature-2", "b")])), vec!["a", "b"]);
        assert!(signatures("stripe", headers(&[])).is_empty());
        assert!(signatures("hubspot", headers(&[("stripe-signature", "x")])).is_empty());
    }

    #[test]
    fn when_a_stripe_signature_is_checked_should_accept_only_the_right_secret_body_and_time() {
        let (body, secret, now) = (br#"{"id":"evt_1"}"#.as_slice(), "whsec_test", 1_807_165_200);
        let sig = sign("stripe", body, secret, now).unwrap();
        assert_eq!(verify("stripe", &[&sig], body, secret, now + 10), Ok(()));
        assert!(verify("stripe", &[&sig], br#"{"id":"evt_2"}"#, secret, now).is_err(), "another body");
        assert!(verify("stripe", &[&sig], body, "whsec_other", now).is_err(), "another secret");
        assert!(verify("stripe", &[&sig], body, secret, now + 301).unwrap_err().contains("tolerance"), "a replay later");
        // A rolled secret: the old and the new signature side by side.
        let both = format!("{sig},v1={}", "00".repeat(32));
        assert_eq!(verify("stripe", &[&both], body, secret, now), Ok(()));
        assert!(verify("stripe", &["t=x,v1=zz"], body, secret, now).is_err());
    }

    #[test]
    fn when_a_docusign_signature_is_checked_should_accept_any_matching_key() {
        let body = br#"{"event":"envelope-completed"}"#.as_slice();
        let sig = sign("docusign", body, "connect-key-1", 0).unwrap();
        let other = sign("docusign", body, "connect-key-2", 0).unwrap();
        assert_eq!(verify("docusign", &[&other, &sig], body, "connect-key-1", 0), Ok(()));
        assert!(verify("docusign", &[&sig], b"{}", "connect-key-1", 0).is_err());
        assert!(verify("docusign", &["not base64!"], body, "connect-key-1", 0).is_err());
    }
}
