//! Bounds on the values taken out of a verified payload. An authentic provider never sends an
//! empty id or a megabyte-long status, so such values are refused rather than stored.

use crate::error::{RejectReason, WebhookError};
use crate::request::Checks;
use serde::de::DeserializeOwned;

/// Longest provider id kept (Stripe, Twilio and Vapi ids are 20 to 70 characters; WhatsApp
/// message ids are base64 strings of about 60).
pub(crate) const MAX_ID_LEN: usize = 256;
/// Longest event type, status or reason string kept.
pub(crate) const MAX_LABEL_LEN: usize = 128;
/// Longest message text kept, in bytes: WhatsApp allows 4,096 characters, Twilio 1,600, and a
/// character is at most four UTF-8 bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Longest address kept (an E.164 number, `whatsapp:+…`, `client:…` or a SIP URI).
pub(crate) const MAX_ADDRESS_LEN: usize = 256;

impl Checks {
    pub(crate) fn json<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, WebhookError> {
        serde_json::from_slice(body)
            .map_err(|_| self.reject(RejectReason::PayloadInvalid, "body is not the expected JSON document"))
    }

    /// An identifier or label: 1..=`max` printable ASCII characters, no spaces.
    pub(crate) fn token(self, value: String, max: usize, detail: &'static str) -> Result<String, WebhookError> {
        if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.reject(RejectReason::PayloadInvalid, detail));
        }
        Ok(value)
    }

    /// Free text (a message body, a name): at most `max_bytes` of UTF-8.
    pub(crate) fn text(self, value: String, max_bytes: usize, detail: &'static str) -> Result<String, WebhookError> {
        if value.len() > max_bytes {
            return Err(self.reject(RejectReason::PayloadInvalid, detail));
        }
        Ok(value)
    }

    pub(crate) fn optional_token(
        self,
        value: Option<String>,
        max: usize,
        detail: &'static str,
    ) -> Result<Option<String>, WebhookError> {
        value.map(|v| self.token(v, max, detail)).transpose()
    }

    pub(crate) fn optional_text(
        self,
        value: Option<String>,
        max_bytes: usize,
        detail: &'static str,
    ) -> Result<Option<String>, WebhookError> {
        value.map(|v| self.text(v, max_bytes, detail)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Provider;

    const CHECKS: Checks = Checks::new(Provider::Vapi);

    #[test]
    fn tokens_are_bounded_printable_ascii() {
        assert_eq!(CHECKS.token("evt_1".into(), 8, "id").unwrap(), "evt_1");
        for bad in ["", "has space", "tab\t", "ünïcode", "123456789"] {
            let err = CHECKS.token(bad.into(), 8, "id").unwrap_err();
            assert_eq!(err.reason(), RejectReason::PayloadInvalid, "{bad:?}");
        }
    }

    #[test]
    fn text_is_bounded_in_bytes() {
        assert!(CHECKS.text("ääää".into(), 8, "text").is_ok());
        assert!(CHECKS.text("äääää".into(), 8, "text").is_err());
    }
}
