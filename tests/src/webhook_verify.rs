//! Standard Webhooks verification, written in the test from the specification — not by
//! calling keel's own signer — so a signing bug cannot hide behind itself.
//!
//! The spec: the signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`; the key is the
//! base64-decoded part of the secret after `whsec_`; the signature header is a
//! space-separated list of `v1,<base64 HMAC-SHA256>` entries, any of which may match.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::receivers::ReceivedRequest;

/// Checks a received webhook's signature against `secret` (`whsec_…`).
///
/// # Errors
/// What is missing or does not match, for the assertion message.
pub fn verify(secret: &str, request: &ReceivedRequest) -> Result<(), String> {
    let id = request.header("webhook-id").ok_or("no webhook-id header")?;
    let timestamp = request
        .header("webhook-timestamp")
        .ok_or("no webhook-timestamp header")?;
    timestamp
        .parse::<i64>()
        .map_err(|_| format!("webhook-timestamp {timestamp:?} is not unix seconds"))?;
    let signatures = request
        .header("webhook-signature")
        .ok_or("no webhook-signature header")?;
    let expected = signature(secret, id, timestamp, &request.body)?;
    let matches = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected);
    if matches {
        Ok(())
    } else {
        Err(format!(
            "webhook-signature {signatures:?} does not contain v1,{expected}"
        ))
    }
}

/// The base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed with the decoded secret.
///
/// # Errors
/// When the secret is not `whsec_<base64>`.
pub fn signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Result<String, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| format!("secret {secret:?} does not start with whsec_"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("secret is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::signature;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn the_specification_example_verifies() {
        let got = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(got, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
