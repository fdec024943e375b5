//! Standard Webhooks signing: `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`.
//!
//! Receivers verify with any Standard Webhooks library, keyed with the endpoint's secret.
//! Public so the app can sign its own outbound alerts the same way.

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of every webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a secret was refused: it is not `whsec_` + base64 of 24–64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("secret must be \"whsec_\" followed by the base64 of 24 to 64 bytes")]
pub struct InvalidSecret;

/// Decodes a `whsec_…` secret into the HMAC key it stands for.
///
/// # Errors
/// [`InvalidSecret`] when the prefix is missing, the rest is not base64 (padded or not), or
/// the key is shorter than 24 or longer than 64 bytes.
pub fn decode_secret(raw: &str) -> Result<Vec<u8>, InvalidSecret> {
    let encoded = raw.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
    // Accept the padded and the unpadded form; receivers' libraries produce both.
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let key = lenient.decode(encoded).map_err(|_| InvalidSecret)?;
    if (24..=64).contains(&key.len()) {
        Ok(key)
    } else {
        Err(InvalidSecret)
    }
}

/// The `webhook-signature` header value for one attempt.
///
/// `key` is the decoded secret (the bytes after `whsec_`), `msg_id` the `webhook-id`,
/// `timestamp` the `webhook-timestamp` in unix seconds, `body` the exact bytes sent.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value signed with each of `keys`, space-separated, the
/// newest key first: during a secret rotation a receiver verifying with either secret
/// accepts the delivery (Standard Webhooks allows several signatures).
pub fn sign_with_each(keys: &[&[u8]], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| sign(key, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification.
    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_decode_to_their_key_only_in_the_whsec_shape() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(key.len(), 24);
        assert_eq!(
            decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(InvalidSecret)
        );
        assert_eq!(decode_secret("whsec_c2hvcnQ="), Err(InvalidSecret));
    }

    #[test]
    fn any_change_to_id_timestamp_or_body_changes_the_signature() {
        let key = [7u8; 32];
        let base = sign(&key, "msg_1", 1, b"{}");
        assert_ne!(base, sign(&key, "msg_2", 1, b"{}"));
        assert_ne!(base, sign(&key, "msg_1", 2, b"{}"));
        assert_ne!(base, sign(&key, "msg_1", 1, b"{ }"));
        assert_ne!(base, sign(&[8u8; 32], "msg_1", 1, b"{}"));
    }
}
