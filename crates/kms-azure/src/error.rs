//! Mapping of Key Vault and Entra ID (token endpoint) HTTP answers to `KmsError`.
//!
//! Key Vault answers errors with `{"error": {"code": "...", "message": "..."}}`; the token
//! endpoint with `{"error": "invalid_client", "error_description": "AADSTS..."}`. Only
//! conditions that can clear by themselves are `Unavailable` (retried, then 503 at the API);
//! refusals an operator must fix (`AccessDenied`, `KeyNotFound`) are not retried and are a 503 too.

use crypto::KmsError;
use kms_http::truncate;
use serde::Deserialize;
use serde_json::Value;

/// `code` and `message` of either error shape (empty when the body is neither).
pub(crate) fn error_fields(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Body {
        error: Option<Value>,
        error_description: Option<String>,
    }
    let Ok(body) = serde_json::from_slice::<Body>(body) else { return (String::new(), String::new()) };
    match body.error {
        Some(Value::Object(error)) => (
            error.get("code").and_then(Value::as_str).unwrap_or_default().to_owned(),
            error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
        ),
        Some(Value::String(code)) => (code, body.error_description.unwrap_or_default()),
        _ => (String::new(), String::new()),
    }
}

/// Throttling (Key Vault's service limits answer 429 with `Retry-After`), request timeout and
/// server errors.
pub(crate) fn is_transient(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status)
}

/// Maps a non-2xx answer of `operation`. `unwrapping` says whether the request carried a
/// wrapped key, so that a 400 on it means the ciphertext was refused.
pub(crate) fn map_status(operation: &str, status: u16, body: &[u8], unwrapping: bool) -> KmsError {
    let (code, message) = error_fields(body);
    let detail = match (code.is_empty(), message.is_empty()) {
        (true, _) => format!("{operation}: HTTP {status}"),
        (false, true) => format!("{operation}: HTTP {status}: {code}"),
        (false, false) => format!("{operation}: HTTP {status}: {code}: {}", truncate(message.trim(), 300)),
    };
    let lower = message.to_ascii_lowercase();
    match status {
        s if is_transient(s) => KmsError::Unavailable(detail),
        // A disabled or expired key answers 403 too; to Praxis that is a key it cannot use.
        403 if lower.contains("disabled") || lower.contains("expired") || lower.contains("not yet valid") => {
            KmsError::KeyNotFound(detail)
        }
        401 | 403 => KmsError::AccessDenied(detail),
        404 => KmsError::KeyNotFound(detail),
        // Wrong version label, modified or foreign bytes: RSA-OAEP decryption fails and Key
        // Vault answers 400 BadParameter. No detail, like every InvalidCiphertext in Praxis.
        400 if unwrapping => KmsError::InvalidCiphertext,
        _ => KmsError::Other(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(status: u16, code: &str, message: &str, unwrapping: bool) -> KmsError {
        let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
        map_status("unwrapKey", status, body.as_bytes(), unwrapping)
    }

    #[test]
    fn statuses_map_to_the_port_errors() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(kv(status, "x", "y", true).is_retryable(), "{status}");
        }
        assert!(
            matches!(kv(403, "Forbidden", "Caller is not authorized", false), KmsError::AccessDenied(m) if m.contains("Forbidden"))
        );
        assert!(matches!(kv(401, "Unauthorized", "AKV10000", false), KmsError::AccessDenied(_)));
        assert!(matches!(
            kv(403, "Forbidden", "Operation unwrapKey is not allowed on a disabled key.", true),
            KmsError::KeyNotFound(_)
        ));
        assert!(
            matches!(kv(404, "KeyNotFound", "not found", true), KmsError::KeyNotFound(m) if m.contains("KeyNotFound"))
        );
        assert_eq!(kv(400, "BadParameter", "bad", true), KmsError::InvalidCiphertext);
        assert!(matches!(kv(400, "BadParameter", "bad", false), KmsError::Other(_)));
        let aad = serde_json::json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."});
        assert!(
            matches!(map_status("token", 401, aad.to_string().as_bytes(), false), KmsError::AccessDenied(m) if m.contains("AADSTS7000215"))
        );
        assert!(matches!(map_status("x", 400, b"<html>", false), KmsError::Other(m) if m.ends_with("HTTP 400")));
    }
}
