//! Mapping of Vault HTTP answers to `KmsError`.
//!
//! Vault answers errors with a status and `{"errors": ["..."]}`. The mapping decides what the
//! API tells the client and the retry loop: only conditions that can clear by themselves are
//! `Unavailable` (retried, then 503); refusals an operator must fix (`AccessDenied`,
//! `KeyNotFound`, `KeyVersionRetired`) are not retried and are a 503 too.

use crypto::KmsError;
use kms_http::truncate;
use serde::Deserialize;

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// The error texts of a Vault error body, joined (empty when the body is not Vault's shape).
pub(crate) fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body).map(|b| b.errors.join("; ")).unwrap_or_default()
}

/// True for the statuses worth another attempt: throttling (rate limit quotas), Vault sealed or
/// a standby without an active node (503), any other server error, and 412 (a performance
/// standby that has not caught up with the token's state yet).
pub(crate) fn is_transient(status: u16) -> bool {
    status == 429 || status == 412 || (500..=599).contains(&status)
}

/// Maps a non-2xx answer of `operation`.
pub(crate) fn map_status(operation: &str, status: u16, body: &[u8]) -> KmsError {
    let text = error_text(body);
    let detail = if text.is_empty() {
        format!("{operation}: HTTP {status}")
    } else {
        format!("{operation}: HTTP {status}: {}", truncate(text.trim(), 300))
    };
    let lower = text.to_ascii_lowercase();
    match status {
        s if is_transient(s) => KmsError::Unavailable(detail),
        // Vault answers 403 "permission denied" both for a policy that lacks the path and for a
        // missing, expired or revoked token.
        401 | 403 => KmsError::AccessDenied(detail),
        404 => KmsError::KeyNotFound(detail),
        400 if lower.contains("key not found") => KmsError::KeyNotFound(detail),
        // "ciphertext or signature version is disallowed by policy (too old)": the key version
        // that wrapped this data key is below the key's min_decryption_version. Named for what it
        // is, so the operator looks at the key's config rather than for a deleted key.
        400 if lower.contains("disallowed by policy") => KmsError::KeyVersionRetired(format!(
            "{detail} (the key version that wrapped this data key is below the key's min_decryption_version; \
             lower it, or run `praxis keys rotate` before raising it)"
        )),
        // Wrong context (the derived key differs, so the GCM tag fails), modified bytes, or not
        // a transit ciphertext at all. No detail, like every InvalidCiphertext in Praxis.
        400 if lower.contains("message authentication failed")
            || lower.contains("invalid ciphertext")
            || lower.contains("unable to decrypt")
            || lower.contains("ciphertext") =>
        {
            KmsError::InvalidCiphertext
        }
        300..=399 => KmsError::Other(format!(
            "{detail} (redirects are not followed: point the address at the active node or a load balancer)"
        )),
        _ => KmsError::Other(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(status: u16, errors: &str) -> KmsError {
        map_status("decrypt", status, serde_json::json!({ "errors": [errors] }).to_string().as_bytes())
    }

    #[test]
    fn statuses_and_messages_map_to_the_port_errors() {
        for status in [429, 412, 500, 502, 503, 504] {
            assert!(map(status, "x").is_retryable(), "{status}");
        }
        assert!(
            matches!(map(403, "1 error occurred:\n\t* permission denied\n\n"), KmsError::AccessDenied(m) if m.contains("permission denied"))
        );
        assert!(matches!(map(404, ""), KmsError::KeyNotFound(_)));
        assert!(matches!(map(400, "encryption key not found"), KmsError::KeyNotFound(_)));
        assert!(matches!(
            map(400, "ciphertext or signature version is disallowed by policy (too old)"),
            KmsError::KeyVersionRetired(m) if m.contains("min_decryption_version")
        ));
        assert_eq!(map(400, "cipher: message authentication failed"), KmsError::InvalidCiphertext);
        assert_eq!(map(400, "invalid ciphertext: no prefix"), KmsError::InvalidCiphertext);
        assert!(matches!(map(400, "missing 'context' for key derivation"), KmsError::Other(_)));
        assert!(matches!(map(307, ""), KmsError::Other(m) if m.contains("redirect")));
        assert!(matches!(map_status("x", 400, b"<html>"), KmsError::Other(m) if m.ends_with("HTTP 400")));
    }
}
