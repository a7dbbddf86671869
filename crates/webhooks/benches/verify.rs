//! Stripe verify + parse of a ~2 KiB event: the per-request cost of the webhook endpoint's
//! pure part, with one signing secret and with three (a rotation in progress, the match last).

// A failing setup is a broken benchmark, not a runtime path: stop loudly.
#![allow(clippy::expect_used, reason = "benchmark setup")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernel::Secret;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use std::hint::black_box;
use time::macros::datetime;
use webhooks::{Headers, InboundRequest, StripeConfig, stripe};

fn random_secret() -> Secret<String> {
    let mut bytes = [0u8; 24];
    SystemRandom::new().fill(&mut bytes).expect("system randomness");
    Secret::new(format!("whsec_{}", hex::encode(bytes)))
}

/// A `checkout.session.completed` event padded with realistic fields to about 2 KiB.
fn event_body() -> Vec<u8> {
    let line_items: Vec<_> = (0..9)
        .map(|i| json!({ "id": format!("li_{i:024}"), "description": "Psychotherapie Einzelsitzung 50 min", "amount_total": 12000, "currency": "eur", "quantity": 1 }))
        .collect();
    let body = serde_json::to_vec(&json!({
        "id": "evt_1PraxisBench0000000000000",
        "object": "event",
        "api_version": "2026-02-25.clover",
        "created": 1_772_366_400,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": "cs_test_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0",
            "object": "checkout.session",
            "amount_subtotal": 12000,
            "amount_total": 12000,
            "currency": "eur",
            "customer_details": { "email": null, "name": null, "phone": null, "tax_exempt": "none" },
            "metadata": { "appointment_id": "5f0c8a9e-1b2d-4c3e-8f4a-6b7c8d9e0f1a", "tenant": "praxis-test" },
            "mode": "payment",
            "payment_intent": "pi_3PraxisBench000000000000",
            "payment_status": "paid",
            "status": "complete",
            "success_url": "https://praxis.example.test/booking/success",
            "line_items": { "object": "list", "data": line_items }
        }}
    }))
    .expect("serialize");
    assert!((1800..=2600).contains(&body.len()), "body is {} bytes", body.len());
    body
}

fn bench_stripe(c: &mut Criterion) {
    let now = datetime!(2026-03-01 12:00 UTC);
    let body = event_body();
    let signing = random_secret();
    let t = now.unix_timestamp().to_string();
    let signed = [t.as_bytes(), b".", &body].concat();
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, signing.expose_secret().as_bytes()), &signed);
    let headers = Headers::new().with("Stripe-Signature", format!("t={t},v1={}", hex::encode(tag.as_ref())));
    let request =
        InboundRequest { headers: &headers, body: &body, public_url: "https://praxis.example.test/stripe", now };

    let one = StripeConfig::new(vec![signing.clone()]);
    let rotating = StripeConfig::new(vec![random_secret(), random_secret(), signing]);
    stripe::receive(&one, &request).expect("the benchmark request verifies");

    let mut group = c.benchmark_group("stripe_verify_and_parse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("one_secret", |b| b.iter(|| stripe::receive(black_box(&one), black_box(&request))));
    group.bench_function("three_secrets", |b| b.iter(|| stripe::receive(black_box(&rotating), black_box(&request))));
    group.finish();
}

criterion_group!(benches, bench_stripe);
criterion_main!(benches);
