//! Standard Webhooks (standardwebhooks.com).

use crate::support::*;
use kernel::Secret;
use serde_json::json;
use webhooks::{Headers, RejectReason, StandardConfig, StandardEvent, StandardSecret, WebhookError, standard};

const URL: &str = "https://praxis.example.test/webhooks/standard";
const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";

/// A fresh `whsec_` secret and its raw key bytes.
fn new_secret() -> (Secret<String>, Vec<u8>) {
    let key = random_bytes(32);
    (Secret::new(format!("whsec_{}", base64(&key))), key)
}

fn config(secrets: &[&Secret<String>]) -> StandardConfig {
    StandardConfig { secrets: secrets.iter().map(|s| StandardSecret::parse(s).unwrap()).collect() }
}

fn v1(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    format!("v1,{}", base64(&hmac_sha256(key, &concat(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]))))
}

fn headers(id: &str, timestamp: &str, signature: &str) -> Headers {
    Headers::new().with("webhook-id", id).with("webhook-timestamp", timestamp).with("webhook-signature", signature)
}

fn body() -> Vec<u8> {
    serde_json::to_vec(
        &json!({ "type": "invoice.paid", "timestamp": "2026-03-01T12:00:00Z", "data": { "amount": 120 } }),
    )
    .unwrap()
}

fn receive(config: &StandardConfig, headers: &Headers, body: &[u8]) -> Result<StandardEvent, WebhookError> {
    standard::receive(config, &request(headers, body, URL))
}

fn ts(offset: i64) -> String {
    (NOW.unix_timestamp() + offset).to_string()
}

#[test]
fn valid_message_is_verified_and_parsed() {
    let (secret, key) = new_secret();
    let body = body();
    let event = receive(&config(&[&secret]), &headers(ID, &ts(0), &v1(&key, ID, &ts(0), &body)), &body).unwrap();
    assert_eq!(event.webhook_id, ID);
    assert_eq!(event.dedupe_key(), ID);
    assert_eq!(event.timestamp, NOW);
    assert_eq!(event.event_type.as_deref(), Some("invoice.paid"));
    assert_eq!(event.payload["data"]["amount"], 120);
    let printed = format!("{event:?}");
    assert!(!printed.contains("amount"), "{printed}");
}

#[test]
fn one_valid_v1_among_others_is_accepted_and_other_versions_are_ignored() {
    let (secret, key) = new_secret();
    let (_, other_key) = new_secret();
    let body = body();
    let good = v1(&key, ID, &ts(0), &body);
    let header = format!(
        "v1a,{} {} v1,not-base64 {good} v2,{}",
        base64(&[7; 64]),
        v1(&other_key, ID, &ts(0), &body),
        good.trim_start_matches("v1,")
    );
    assert!(receive(&config(&[&secret]), &headers(ID, &ts(0), &header), &body).is_ok());

    // The right HMAC under another version label does not count.
    let relabelled = good.replacen("v1,", "v1a,", 1);
    let err = assert_rejected(
        receive(&config(&[&secret]), &headers(ID, &ts(0), &relabelled), &body),
        RejectReason::BadSignature,
        &[&good],
    );
    assert_eq!(err.detail(), "webhook-signature has no v1 signature");
}

#[test]
fn signature_failures() {
    let (secret, key) = new_secret();
    let (old, old_key) = new_secret();
    let body = body();
    let good = v1(&key, ID, &ts(0), &body);
    let cfg = config(&[&secret]);

    let mut tampered = body.clone();
    tampered[10] ^= 0x20;
    assert_rejected(receive(&cfg, &headers(ID, &ts(0), &good), &tampered), RejectReason::BadSignature, &[&good]);
    // id and timestamp are signed too.
    assert_rejected(receive(&cfg, &headers("msg_other", &ts(0), &good), &body), RejectReason::BadSignature, &[]);
    assert_rejected(receive(&cfg, &headers(ID, &ts(1), &good), &body), RejectReason::BadSignature, &[]);

    let by_old = v1(&old_key, ID, &ts(0), &body);
    assert_rejected(
        receive(&cfg, &headers(ID, &ts(0), &by_old), &body),
        RejectReason::BadSignature,
        &[old.expose_secret()],
    );
    assert!(receive(&config(&[&secret, &old]), &headers(ID, &ts(0), &by_old), &body).is_ok());

    // The key is the decoded secret, not the secret text.
    let keyed_with_text = v1(secret.expose_secret().as_bytes(), ID, &ts(0), &body);
    assert_rejected(receive(&cfg, &headers(ID, &ts(0), &keyed_with_text), &body), RejectReason::BadSignature, &[]);

    assert_rejected(
        receive(&StandardConfig { secrets: vec![] }, &headers(ID, &ts(0), &good), &body),
        RejectReason::NoSecretConfigured,
        &[],
    );
}

#[test]
fn timestamps_more_than_five_minutes_away_are_rejected() {
    let (secret, key) = new_secret();
    let body = body();
    let cfg = config(&[&secret]);
    for offset in [-301, 301, -3600, 3600] {
        let signature = v1(&key, ID, &ts(offset), &body);
        assert_rejected(
            receive(&cfg, &headers(ID, &ts(offset), &signature), &body),
            RejectReason::TimestampOutOfTolerance,
            &[],
        );
    }
    for offset in [-300, 300] {
        assert!(receive(&cfg, &headers(ID, &ts(offset), &v1(&key, ID, &ts(offset), &body)), &body).is_ok());
    }
}

#[test]
fn missing_and_malformed_headers() {
    let (secret, key) = new_secret();
    let body = body();
    let cfg = config(&[&secret]);
    let good = v1(&key, ID, &ts(0), &body);
    let all = [("webhook-id", ID.to_owned()), ("webhook-timestamp", ts(0)), ("webhook-signature", good.clone())];
    for skip in 0..all.len() {
        let partial: Headers =
            all.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, (n, v))| (*n, v.as_str())).collect();
        assert_rejected(receive(&cfg, &partial, &body), RejectReason::MissingHeader, &[&good]);
    }
    for bad_timestamp in ["2026-03-01T12:00:00Z", "1.5", "-1"] {
        assert_rejected(receive(&cfg, &headers(ID, bad_timestamp, &good), &body), RejectReason::MalformedHeader, &[]);
    }
    let too_many = [good.as_str(); 9].join(" ");
    assert_rejected(receive(&cfg, &headers(ID, &ts(0), &too_many), &body), RejectReason::MalformedHeader, &[]);
}

#[test]
fn secrets_are_decoded_and_checked_when_configured() {
    let key = random_bytes(24);
    let with_prefix = StandardSecret::parse(&Secret::new(format!("whsec_{}", base64(&key)))).unwrap();
    let without_prefix = StandardSecret::parse(&Secret::new(base64(&key))).unwrap();
    let body = body();
    let signed = headers(ID, &ts(0), &v1(&key, ID, &ts(0), &body));
    for secret in [with_prefix, without_prefix] {
        let printed = format!("{secret:?}");
        assert!(
            !printed.contains(&base64(&key)) && !printed.contains(&format!("{:?}", key[0..4].to_vec())),
            "{printed}"
        );
        assert!(receive(&StandardConfig { secrets: vec![secret] }, &signed, &body).is_ok());
    }

    let invalid = [
        "whsec_!!!not-base64!!!".to_owned(),
        format!("whsec_{}", base64(&random_bytes(16))),
        format!("whsec_{}", base64(&random_bytes(65))),
        String::new(),
    ];
    for text in invalid {
        let err = StandardSecret::parse(&Secret::new(text)).unwrap_err();
        assert_eq!(err.reason(), RejectReason::InvalidConfiguration);
        assert!(err.reason().is_configuration_fault());
    }
}

#[test]
fn payload_shapes() {
    let (secret, key) = new_secret();
    let cfg = config(&[&secret]);
    let signed = |id: &str, body: &[u8]| receive(&cfg, &headers(id, &ts(0), &v1(&key, id, &ts(0), body)), body);

    assert_eq!(signed(ID, br#"{"data":1}"#).unwrap().event_type, None);
    assert_rejected(signed(ID, b"not json"), RejectReason::PayloadInvalid, &[]);
    assert_rejected(signed(ID, br#"{"type":5}"#), RejectReason::PayloadInvalid, &[]);
    assert_rejected(signed(&"m".repeat(257), br#"{}"#), RejectReason::PayloadInvalid, &[]);
}
