//! Vapi: the HMAC credential and the explicitly chosen legacy shared secret, never mixed.

use crate::support::*;
use kernel::Secret;
use serde_json::json;
use std::time::Duration;
use webhooks::{Headers, RejectReason, VapiConfig, VapiEvent, WebhookError, vapi};

const URL: &str = "https://praxis.example.test/webhooks/vapi";

fn status_update() -> Vec<u8> {
    serde_json::to_vec(&json!({ "message": {
        "type": "status-update",
        "status": "ended",
        "endedReason": "customer-ended-call",
        "timestamp": NOW.unix_timestamp() * 1000,
        "call": { "id": "8f0a3a0e-5bb1-4bd3-9d1e-2b1f0c9c1a11", "orgId": "org-1", "type": "inboundPhoneCall" },
        "artifact": { "transcript": "AI: Hallo. User: Ich möchte absagen." }
    }}))
    .unwrap()
}

fn signature(secret: &Secret<String>, timestamp: &str, body: &[u8]) -> String {
    hmac_sha256_hex(secret.expose_secret().as_bytes(), &concat(&[timestamp.as_bytes(), b".", body]))
}

fn signed_headers(secret: &Secret<String>, timestamp: &str, body: &[u8]) -> Headers {
    Headers::new().with("x-signature", signature(secret, timestamp, body)).with("x-timestamp", timestamp)
}

fn receive(config: &VapiConfig, headers: &Headers, body: &[u8]) -> Result<VapiEvent, WebhookError> {
    vapi::receive(config, &request(headers, body, URL))
}

fn seconds(offset: i64) -> String {
    (NOW.unix_timestamp() + offset).to_string()
}

fn millis(offset_ms: i64) -> String {
    (NOW.unix_timestamp() * 1000 + offset_ms).to_string()
}

#[test]
fn hmac_request_is_verified_and_parsed() {
    let secret = random_secret("");
    let body = status_update();
    let config = VapiConfig::hmac(vec![secret.clone()]);
    for timestamp in [seconds(0), millis(0), millis(-1500)] {
        let event = receive(&config, &signed_headers(&secret, &timestamp, &body), &body).unwrap();
        assert_eq!(event.message_type, "status-update");
        assert_eq!(event.call_id, "8f0a3a0e-5bb1-4bd3-9d1e-2b1f0c9c1a11");
        assert_eq!(event.status.as_deref(), Some("ended"));
        assert_eq!(event.ended_reason.as_deref(), Some("customer-ended-call"));
        assert_eq!(event.dedupe_key(), "8f0a3a0e-5bb1-4bd3-9d1e-2b1f0c9c1a11:status-update:ended");
    }
}

#[test]
fn expired_and_future_timestamps_are_rejected() {
    let secret = random_secret("");
    let body = status_update();
    let config = VapiConfig::hmac(vec![secret.clone()]);
    for timestamp in [seconds(-301), seconds(301), millis(-301_000), millis(301_000), seconds(-86_400)] {
        let result = receive(&config, &signed_headers(&secret, &timestamp, &body), &body);
        assert_rejected(result, RejectReason::TimestampOutOfTolerance, &[]);
    }
    for timestamp in [seconds(-300), seconds(300), millis(299_999)] {
        assert!(receive(&config, &signed_headers(&secret, &timestamp, &body), &body).is_ok(), "{timestamp}");
    }
    let strict = VapiConfig::Hmac { secrets: vec![secret.clone()], tolerance: Duration::from_secs(30) };
    assert_rejected(
        receive(&strict, &signed_headers(&secret, &seconds(-31), &body), &body),
        RejectReason::TimestampOutOfTolerance,
        &[],
    );
}

#[test]
fn hmac_signature_failures() {
    let secret = random_secret("");
    let old = random_secret("");
    let body = status_update();
    let config = VapiConfig::hmac(vec![secret.clone()]);
    let timestamp = seconds(0);

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let good = signed_headers(&secret, &timestamp, &body);
    assert_rejected(receive(&config, &good, &tampered), RejectReason::BadSignature, &[]);

    let by_old = signed_headers(&old, &timestamp, &body);
    assert_rejected(receive(&config, &by_old, &body), RejectReason::BadSignature, &[old.expose_secret()]);
    assert!(receive(&VapiConfig::hmac(vec![secret.clone(), old.clone()]), &by_old, &body).is_ok());

    // The timestamp is part of what is signed: another one with the same signature fails.
    let sig = signature(&secret, &timestamp, &body);
    let shifted = Headers::new().with("x-signature", &sig).with("x-timestamp", seconds(1));
    assert_rejected(receive(&config, &shifted, &body), RejectReason::BadSignature, &[&sig]);

    let missing_timestamp = Headers::new().with("x-signature", &sig);
    assert_rejected(receive(&config, &missing_timestamp, &body), RejectReason::MissingHeader, &[]);
    let missing_signature = Headers::new().with("x-timestamp", &timestamp);
    assert_rejected(receive(&config, &missing_signature, &body), RejectReason::MissingHeader, &[]);
    for (bad_sig, bad_ts) in [
        ("sha256=".to_owned() + &sig, timestamp.as_str()),
        ("zz".repeat(32), timestamp.as_str()),
        (sig.clone(), "yesterday"),
        (sig.clone(), "-5"),
    ] {
        let headers = Headers::new().with("x-signature", bad_sig).with("x-timestamp", bad_ts);
        assert_rejected(receive(&config, &headers, &body), RejectReason::MalformedHeader, &[&sig]);
    }
    assert_rejected(receive(&VapiConfig::hmac(vec![]), &good, &body), RejectReason::NoSecretConfigured, &[]);
}

#[test]
fn hmac_mode_never_falls_back_to_the_shared_secret() {
    let secret = random_secret("");
    let body = status_update();
    let headers = Headers::new().with("x-vapi-secret", secret.expose_secret());
    let result = receive(&VapiConfig::hmac(vec![secret.clone()]), &headers, &body);
    assert_rejected(result, RejectReason::MissingHeader, &[secret.expose_secret()]);
}

#[test]
fn legacy_shared_secret_only_when_configured() {
    let secret = random_secret("");
    let previous = random_secret("");
    let body = status_update();
    let config = VapiConfig::LegacySharedSecret { secrets: vec![secret.clone(), previous.clone()] };

    for presented in [&secret, &previous] {
        let headers = Headers::new().with("X-Vapi-Secret", presented.expose_secret());
        assert!(receive(&config, &headers, &body).is_ok());
    }

    let wrong = random_secret("");
    let headers = Headers::new().with("x-vapi-secret", wrong.expose_secret());
    assert_rejected(
        receive(&config, &headers, &body),
        RejectReason::BadSignature,
        &[wrong.expose_secret(), secret.expose_secret()],
    );
    let prefix = Headers::new().with("x-vapi-secret", &secret.expose_secret()[..8]);
    assert_rejected(receive(&config, &prefix, &body), RejectReason::BadSignature, &[]);

    // A valid HMAC does not stand in for the shared secret either.
    let hmac_only = signed_headers(&secret, &seconds(0), &body);
    assert_rejected(receive(&config, &hmac_only, &body), RejectReason::MissingHeader, &[]);
}

#[test]
fn payload_shapes() {
    let secret = random_secret("");
    let config = VapiConfig::hmac(vec![secret.clone()]);
    let signed = |value: serde_json::Value| {
        let body = serde_json::to_vec(&value).unwrap();
        receive(&config, &signed_headers(&secret, &seconds(0), &body), &body)
    };

    let report = signed(json!({ "message": { "type": "end-of-call-report", "endedReason": "assistant-ended-call",
        "call": { "id": "call-1" }, "summary": "…", "messages": [] } }))
    .unwrap();
    assert_eq!(report.dedupe_key(), "call-1:end-of-call-report");
    assert_eq!(report.status, None);

    for invalid in [
        json!({ "message": { "type": "status-update", "status": "ended" } }),
        json!({ "message": { "type": "status-update", "call": { "id": "" } } }),
        json!({ "message": { "call": { "id": "call-1" } } }),
        json!({ "message": { "type": "status update", "call": { "id": "call-1" } } }),
        json!({ "type": "status-update", "call": { "id": "call-1" } }),
    ] {
        assert_rejected(signed(invalid), RejectReason::PayloadInvalid, &[]);
    }
}
