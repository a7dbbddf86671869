//! Stripe: the seven cases of Stripe's own SDK test suites, and the rest of the rules.

use crate::support::*;
use kernel::Secret;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;
use webhooks::{
    Headers, MAX_BODY_BYTES, RejectReason, StripeConfig, StripeEventKind, StripePayment, StripeTolerance, stripe,
};

const URL: &str = "https://praxis.example.test/webhooks/stripe";

fn signature(secret: &Secret<String>, timestamp: i64, body: &[u8]) -> String {
    hmac_sha256_hex(secret.expose_secret().as_bytes(), &concat(&[timestamp.to_string().as_bytes(), b".", body]))
}

fn header_for(secret: &Secret<String>, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature(secret, timestamp, body))
}

fn at(offset_seconds: i64) -> i64 {
    NOW.unix_timestamp() + offset_seconds
}

fn body_of(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

fn checkout_completed(appointment: Uuid) -> Vec<u8> {
    body_of(json!({
        "id": "evt_1PraxisTest",
        "object": "event",
        "type": "checkout.session.completed",
        "livemode": false,
        "created": NOW.unix_timestamp(),
        "data": { "object": {
            "id": "cs_test_a1b2c3",
            "object": "checkout.session",
            "amount_total": 12000,
            "payment_status": "paid",
            "metadata": { "appointment_id": appointment.to_string(), "other": "x" }
        }}
    }))
}

fn receive(config: &StripeConfig, header: &str, body: &[u8]) -> Result<webhooks::StripeEvent, webhooks::WebhookError> {
    let headers = Headers::new().with("Stripe-Signature", header);
    stripe::receive(config, &request(&headers, body, URL))
}

#[test]
fn valid_event_is_verified_and_parsed() {
    let secret = random_secret("whsec_");
    let appointment = Uuid::new_v4();
    let body = checkout_completed(appointment);
    let event = receive(&StripeConfig::new(vec![secret.clone()]), &header_for(&secret, at(0), &body), &body).unwrap();
    assert_eq!(event.id, "evt_1PraxisTest");
    assert_eq!(event.dedupe_key(), "evt_1PraxisTest");
    assert_eq!(event.event_type(), "checkout.session.completed");
    assert!(!event.livemode);
    assert_eq!(
        event.kind,
        StripeEventKind::CheckoutSessionCompleted(StripePayment {
            object_id: "cs_test_a1b2c3".into(),
            appointment_id: Some(appointment),
            payment_status: Some("paid".into())
        })
    );
}

// Stripe SDK case 1.
#[test]
fn malformed_header_is_rejected() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let config = StripeConfig::new(vec![secret.clone()]);
    for header in ["i'm not even a real signature header", "v1=abc", "t=,v1=abc", "t=12x,v1=abc", "t=-5,v1=abc"] {
        assert_rejected(receive(&config, header, &body), RejectReason::MalformedHeader, &[]);
    }
    let sig = signature(&secret, at(0), &body);
    let twice = format!("t={},t={},v1={sig}", at(0), at(1));
    assert_rejected(receive(&config, &twice, &body), RejectReason::MalformedHeader, &[&sig]);
}

// Stripe SDK case 2: a header whose only signature is v0 (or any scheme but v1) is refused,
// even when that signature is the right HMAC.
#[test]
fn header_without_v1_signature_is_rejected() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let sig = signature(&secret, at(0), &body);
    let config = StripeConfig::new(vec![secret.clone()]);
    for header in [format!("t={},v0={sig}", at(0)), format!("t={},v2={sig}", at(0)), format!("t={}", at(0))] {
        let err = assert_rejected(receive(&config, &header, &body), RejectReason::BadSignature, &[&sig]);
        assert_eq!(err.detail(), "Stripe-Signature has no v1 signature");
    }
}

// Stripe SDK case 3.
#[test]
fn bad_signature_is_rejected() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let config = StripeConfig::new(vec![secret.clone()]);
    let wrong = "0".repeat(64);
    for header in [format!("t={},v1={wrong}", at(0)), format!("t={},v1=not-hex", at(0))] {
        assert_rejected(receive(&config, &header, &body), RejectReason::BadSignature, &[secret.expose_secret()]);
    }
    // Signed with the right secret, but over a different timestamp than the header claims.
    let header = format!("t={},v1={}", at(0), signature(&secret, at(1), &body));
    assert_rejected(receive(&config, &header, &body), RejectReason::BadSignature, &[]);
}

// Stripe SDK case 4, and the same into the future.
#[test]
fn timestamp_outside_tolerance_is_rejected() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let config = StripeConfig::new(vec![secret.clone()]);
    for offset in [-301, 301, -86_400, 86_400] {
        let header = header_for(&secret, at(offset), &body);
        assert_rejected(receive(&config, &header, &body), RejectReason::TimestampOutOfTolerance, &[&header]);
    }
    let strict = StripeConfig { tolerance: StripeTolerance::Within(Duration::from_secs(10)), ..config };
    assert_rejected(
        receive(&strict, &header_for(&secret, at(-11), &body), &body),
        RejectReason::TimestampOutOfTolerance,
        &[],
    );
}

// Stripe SDK case 5.
#[test]
fn timestamp_inside_tolerance_is_accepted() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let config = StripeConfig::new(vec![secret.clone()]);
    for offset in [-300, -299, 0, 299, 300] {
        assert!(receive(&config, &header_for(&secret, at(offset), &body), &body).is_ok(), "offset {offset}");
    }
}

// Stripe SDK case 6.
#[test]
fn one_good_signature_among_bad_ones_is_accepted() {
    let secret = random_secret("whsec_");
    let other = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let t = at(0);
    let header = format!(
        "t={t},v1={},v0={},v1=zz,v1={},v1={}",
        "f".repeat(64),
        signature(&secret, t, &body),
        signature(&secret, t, &body),
        signature(&other, t, &body)
    );
    assert!(receive(&StripeConfig::new(vec![secret]), &header, &body).is_ok());
}

// Stripe SDK case 7.
#[test]
fn tolerance_disabled_accepts_old_timestamps_but_still_needs_the_signature() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let config = StripeConfig { signing_secrets: vec![secret.clone()], tolerance: StripeTolerance::Disabled };
    let a_year_ago = at(-365 * 86_400);
    assert!(receive(&config, &header_for(&secret, a_year_ago, &body), &body).is_ok());
    let forged = format!("t={a_year_ago},v1={}", "0".repeat(64));
    assert_rejected(receive(&config, &forged, &body), RejectReason::BadSignature, &[]);
}

#[test]
fn tampered_body_is_rejected() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let header = header_for(&secret, at(0), &body);
    let tampered = checkout_completed(Uuid::new_v4());
    assert_rejected(receive(&StripeConfig::new(vec![secret]), &header, &tampered), RejectReason::BadSignature, &[]);
}

#[test]
fn wrong_secret_is_rejected_and_an_old_secret_still_in_the_list_is_accepted() {
    let old = random_secret("whsec_");
    let new = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let signed_with_old = header_for(&old, at(0), &body);

    let only_new = StripeConfig::new(vec![new.clone()]);
    assert_rejected(
        receive(&only_new, &signed_with_old, &body),
        RejectReason::BadSignature,
        &[old.expose_secret(), new.expose_secret()],
    );

    let rotating = StripeConfig::new(vec![new.clone(), old.clone()]);
    assert!(receive(&rotating, &signed_with_old, &body).is_ok());
    assert!(receive(&rotating, &header_for(&new, at(0), &body), &body).is_ok());
}

#[test]
fn missing_header_and_missing_secret_are_rejected() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let config = StripeConfig::new(vec![secret.clone()]);
    let no_headers = Headers::new();
    assert_rejected(stripe::receive(&config, &request(&no_headers, &body, URL)), RejectReason::MissingHeader, &[]);

    let header = header_for(&secret, at(0), &body);
    for secrets in [vec![], vec![Secret::new(String::new())]] {
        assert_rejected(receive(&StripeConfig::new(secrets), &header, &body), RejectReason::NoSecretConfigured, &[]);
    }
}

#[test]
fn repeated_signature_header_is_rejected() {
    let secret = random_secret("whsec_");
    let body = checkout_completed(Uuid::new_v4());
    let header = header_for(&secret, at(0), &body);
    let headers = Headers::new().with("stripe-signature", &header).with("Stripe-Signature", &header);
    let result = stripe::receive(&StripeConfig::new(vec![secret]), &request(&headers, &body, URL));
    assert_rejected(result, RejectReason::MalformedHeader, &[]);
}

#[test]
fn oversized_body_is_rejected_before_hashing() {
    let secret = random_secret("whsec_");
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let header = header_for(&secret, at(0), &body);
    assert_rejected(receive(&StripeConfig::new(vec![secret]), &header, &body), RejectReason::PayloadTooLarge, &[]);
}

#[test]
fn payload_shapes() {
    let secret = random_secret("whsec_");
    let config = StripeConfig::new(vec![secret.clone()]);
    let signed = |body: &[u8]| receive(&config, &header_for(&secret, at(0), body), body);

    let failed = body_of(json!({
        "id": "evt_2", "type": "payment_intent.payment_failed", "livemode": true,
        "data": { "object": { "id": "pi_3", "metadata": {} } }
    }));
    let event = signed(&failed).unwrap();
    assert!(event.livemode);
    assert_eq!(
        event.kind,
        StripeEventKind::PaymentIntentPaymentFailed(StripePayment {
            object_id: "pi_3".into(),
            appointment_id: None,
            payment_status: None
        })
    );

    let appointment = Uuid::new_v4();
    let succeeded = body_of(json!({
        "id": "evt_3", "type": "payment_intent.succeeded", "livemode": false,
        "data": { "object": { "id": "pi_4", "metadata": { "appointment_id": appointment.to_string() } } }
    }));
    assert_eq!(
        signed(&succeeded).unwrap().kind,
        StripeEventKind::PaymentIntentSucceeded(StripePayment {
            object_id: "pi_4".into(),
            appointment_id: Some(appointment),
            payment_status: None
        })
    );

    // Other types are kept by name, whatever their object looks like.
    let other = body_of(json!({
        "id": "evt_4", "type": "balance.available", "livemode": false,
        "data": { "object": { "available": [], "metadata": { "appointment_id": 7 } } }
    }));
    let event = signed(&other).unwrap();
    assert_eq!(event.kind, StripeEventKind::Other { event_type: "balance.available".into() });
    assert_eq!(event.event_type(), "balance.available");

    // An event without `livemode` (Stripe's SDK test helpers build them so) reads as test mode.
    let without_livemode = body_of(json!({
        "id": "evt_8", "object": "event", "type": "payment_intent.succeeded",
        "data": { "object": { "id": "pi_8", "object": "payment_intent", "metadata": {} } }
    }));
    assert!(!signed(&without_livemode).unwrap().livemode);

    let invalid = [
        body_of(json!({ "id": "evt_5", "type": "payment_intent.succeeded", "livemode": false,
            "data": { "object": { "id": "pi_5", "metadata": { "appointment_id": "not-a-uuid" } } } })),
        body_of(
            json!({ "id": "evt_6", "type": "payment_intent.succeeded", "livemode": false, "data": { "object": {} } }),
        ),
        body_of(json!({ "type": "charge.succeeded", "livemode": false, "data": { "object": {} } })),
        body_of(json!({ "id": "", "type": "charge.succeeded", "livemode": false })),
        body_of(json!({ "id": "x".repeat(300), "type": "charge.succeeded", "livemode": false })),
        body_of(json!({ "id": "evt_7", "type": "charge succeeded", "livemode": false })),
        b"not json at all".to_vec(),
    ];
    for body in invalid {
        assert_rejected(signed(&body), RejectReason::PayloadInvalid, &[]);
    }
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let secret = random_secret("whsec_");
    let printed = format!("{:?}", StripeConfig::new(vec![secret.clone()]));
    assert!(!printed.contains(secret.expose_secret()));
}
