//! Test support: secrets made at run time, and each provider's signing rule written out again
//! independently of the crate, from the providers' documentation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kernel::Secret;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use time::OffsetDateTime;
use time::macros::datetime;
use webhooks::{Headers, InboundRequest, RejectReason, WebhookError};

/// The fixed time every test receives its request at.
pub const NOW: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    SystemRandom::new().fill(&mut bytes).unwrap();
    bytes
}

/// A fresh secret of the given shape, e.g. `random_secret("whsec_")` for Stripe.
pub fn random_secret(prefix: &str) -> Secret<String> {
    Secret::new(format!("{prefix}{}", hex::encode(random_bytes(24))))
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref().to_vec()
}

pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    hex::encode(hmac_sha256(key, message))
}

pub fn hmac_sha1_base64(key: &[u8], message: &[u8]) -> String {
    BASE64.encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key), message))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

pub fn base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A request received at [`NOW`] on `url`.
pub fn request<'a>(headers: &'a Headers, body: &'a [u8], url: &'a str) -> InboundRequest<'a> {
    InboundRequest { headers, body, public_url: url, now: NOW }
}

/// Asserts a rejection's reason, and that its text names neither any of the given secret
/// strings nor any of the given signature strings.
#[track_caller]
pub fn assert_rejected<T: std::fmt::Debug>(
    result: Result<T, WebhookError>,
    reason: RejectReason,
    must_not_contain: &[&str],
) -> WebhookError {
    let err = result.expect_err("expected a rejection");
    assert_eq!(err.reason(), reason, "{err}");
    let printed = format!("{err} {err:?}");
    for needle in must_not_contain {
        assert!(!needle.is_empty() && !printed.contains(needle), "rejection leaks {needle:?}: {printed}");
    }
    err
}

/// `body` with the byte at `position` (modulo the length) XORed with a non-zero `mask`.
pub fn flip(body: &[u8], position: usize, mask: u8) -> Vec<u8> {
    let mut flipped = body.to_vec();
    flipped[position % body.len()] ^= mask.max(1);
    flipped
}
