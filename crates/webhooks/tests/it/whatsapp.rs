//! WhatsApp (Meta Cloud API): X-Hub-Signature-256, the payload bounds and the GET handshake.

use crate::support::*;
use kernel::Secret;
use serde_json::{Value, json};
use webhooks::whatsapp::{self, MAX_CHALLENGE_LEN};
use webhooks::{Headers, RejectReason, WebhookError, WhatsAppConfig, WhatsAppEvent};

const URL: &str = "https://praxis.example.test/webhooks/whatsapp";

fn sign(secret: &Secret<String>, body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(secret.expose_secret().as_bytes(), body))
}

fn receive(config: &WhatsAppConfig, header: &str, body: &[u8]) -> Result<WhatsAppEvent, WebhookError> {
    let headers = Headers::new().with("X-Hub-Signature-256", header);
    whatsapp::receive(config, &request(&headers, body, URL))
}

fn config(secrets: &[&Secret<String>]) -> WhatsAppConfig {
    WhatsAppConfig { app_secrets: secrets.iter().map(|s| (*s).clone()).collect(), phone_number_ids: Vec::new() }
}

fn text_message(id: &str, from: &str, text: &str) -> Value {
    json!({ "from": from, "id": id, "timestamp": NOW.unix_timestamp().to_string(), "type": "text", "text": { "body": text } })
}

/// A notification whose entries each carry one change with the given messages and statuses.
fn notification(entries: Vec<(Vec<Value>, Vec<Value>)>) -> Vec<u8> {
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(messages, statuses)| {
            json!({ "id": "102290129340398", "changes": [{ "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "15550783881", "phone_number_id": "106540352242922" },
                "contacts": [{ "profile": { "name": "Test Patient" }, "wa_id": "4915112345678" }],
                "messages": messages,
                "statuses": statuses
            }}]})
        })
        .collect();
    serde_json::to_vec(&json!({ "object": "whatsapp_business_account", "entry": entries })).unwrap()
}

fn one_message() -> Vec<u8> {
    notification(vec![(vec![text_message("wamid.HBgN1", "4915112345678", "Hallo, ich brauche einen Termin")], vec![])])
}

#[test]
fn valid_message_is_verified_and_parsed() {
    let secret = random_secret("");
    let body = one_message();
    let event = receive(&config(&[&secret]), &sign(&secret, &body), &body).unwrap();
    assert_eq!(event.messages.len(), 1);
    let message = &event.messages[0];
    assert_eq!(message.id, "wamid.HBgN1");
    assert_eq!(message.from.expose(), "+4915112345678");
    assert_eq!(message.timestamp, NOW);
    assert_eq!(message.message_type, "text");
    assert_eq!(message.text.as_ref().map(|t| t.expose().as_str()), Some("Hallo, ich brauche einen Termin"));
    assert_eq!(event.dedupe_keys(), vec!["wamid.HBgN1".to_owned()]);

    let printed = format!("{event:?}");
    assert!(!printed.contains("Termin") && !printed.contains("4915112345678"), "{printed}");
}

#[test]
fn statuses_are_parsed_and_keyed_by_id_and_status() {
    let secret = random_secret("");
    let status = |s: &str| json!({ "id": "wamid.OUT1", "status": s, "timestamp": "1772366400", "recipient_id": "4915112345678" });
    let body = notification(vec![(vec![], vec![status("sent"), status("delivered")])]);
    let event = receive(&config(&[&secret]), &sign(&secret, &body), &body).unwrap();
    assert_eq!(event.statuses.len(), 2);
    assert_eq!(event.statuses[1].status, "delivered");
    assert_eq!(event.statuses[1].recipient.as_ref().unwrap().expose(), "+4915112345678");
    assert_eq!(event.dedupe_keys(), vec!["wamid.OUT1:sent".to_owned(), "wamid.OUT1:delivered".to_owned()]);

    // A recipient that is not a phone number (a group) is left out; the status still counts.
    let group = json!({ "id": "wamid.OUT2", "status": "read", "timestamp": "1772366400", "recipient_id": "120363040000000000@g.us" });
    let body = notification(vec![(vec![], vec![group])]);
    let event = receive(&config(&[&secret]), &sign(&secret, &body), &body).unwrap();
    assert_eq!(event.statuses[0].recipient, None);
}

#[test]
fn signature_failures() {
    let secret = random_secret("");
    let body = one_message();
    let good = sign(&secret, &body);
    let cfg = config(&[&secret]);

    let tampered = notification(vec![(vec![text_message("wamid.HBgN1", "4915112345678", "Hallo!")], vec![])]);
    assert_rejected(receive(&cfg, &good, &tampered), RejectReason::BadSignature, &[&good]);

    let other = random_secret("");
    assert_rejected(receive(&cfg, &sign(&other, &body), &body), RejectReason::BadSignature, &[other.expose_secret()]);

    let digest = good.trim_start_matches("sha256=");
    for malformed in
        [digest.to_owned(), format!("sha1={digest}"), "sha256=xyz".to_owned(), format!("sha256={}", &digest[..62])]
    {
        assert_rejected(receive(&cfg, &malformed, &body), RejectReason::MalformedHeader, &[digest]);
    }

    let no_header = Headers::new().with("X-Hub-Signature", "sha1=abc");
    assert_rejected(whatsapp::receive(&cfg, &request(&no_header, &body, URL)), RejectReason::MissingHeader, &[]);

    assert_rejected(receive(&config(&[]), &good, &body), RejectReason::NoSecretConfigured, &[]);
}

#[test]
fn old_app_secret_still_in_the_list_is_accepted() {
    let old = random_secret("");
    let new = random_secret("");
    let body = one_message();
    assert!(receive(&config(&[&new, &old]), &sign(&old, &body), &body).is_ok());
    assert!(receive(&config(&[&new]), &sign(&old, &body), &body).is_err());
}

#[test]
fn entry_message_and_status_bounds() {
    let secret = random_secret("");
    let cfg = config(&[&secret]);
    let signed = |body: &[u8]| receive(&cfg, &sign(&secret, body), body);
    let message = |i: usize| text_message(&format!("wamid.M{i}"), "4915112345678", "hi");
    let status = |i: usize| json!({ "id": format!("wamid.S{i}"), "status": "read", "timestamp": "1772366400" });

    let ten_entries = notification((0..10).map(|i| (vec![message(i)], vec![])).collect());
    assert_eq!(signed(&ten_entries).unwrap().messages.len(), 10);
    let eleven_entries = notification((0..11).map(|i| (vec![message(i)], vec![])).collect());
    assert_rejected(signed(&eleven_entries), RejectReason::PayloadInvalid, &[]);

    // 50 messages over five entries pass; one more anywhere does not.
    let fifty = notification((0..5).map(|e| ((0..10).map(|i| message(e * 10 + i)).collect(), vec![])).collect());
    assert_eq!(signed(&fifty).unwrap().dedupe_keys().len(), 50);
    let mut entries: Vec<(Vec<Value>, Vec<Value>)> =
        (0..5).map(|e| ((0..10).map(|i| message(e * 10 + i)).collect(), vec![])).collect();
    entries.push((vec![message(50)], vec![]));
    assert_rejected(signed(&notification(entries)), RejectReason::PayloadInvalid, &[]);

    let fifty_one_statuses = notification(vec![(vec![], (0..51).map(status).collect())]);
    assert_rejected(signed(&fifty_one_statuses), RejectReason::PayloadInvalid, &[]);
}

#[test]
fn payload_shapes() {
    let secret = random_secret("");
    let cfg = config(&[&secret]);
    let signed = |body: &[u8]| receive(&cfg, &sign(&secret, body), body);

    let image = json!({ "from": "4915112345678", "id": "wamid.IMG", "timestamp": "1772366400", "type": "image",
        "image": { "id": "media-1", "mime_type": "image/jpeg" } });
    let event = signed(&notification(vec![(vec![image], vec![])])).unwrap();
    assert_eq!(event.messages[0].message_type, "image");
    assert_eq!(event.messages[0].text, None);

    let no_changes =
        serde_json::to_vec(&json!({ "object": "whatsapp_business_account", "entry": [{ "id": "1", "changes": [] }] }))
            .unwrap();
    assert!(signed(&no_changes).unwrap().dedupe_keys().is_empty());

    let invalid = [
        serde_json::to_vec(&json!({ "object": "page", "entry": [] })).unwrap(),
        notification(vec![(vec![text_message("wamid.1", "+4915112345678", "plus sign")], vec![])]),
        notification(vec![(vec![text_message("wamid.1", "04915112345678", "leading zero")], vec![])]),
        notification(vec![(vec![text_message("wamid.1", "4915112345678901234", "too long")], vec![])]),
        notification(vec![(vec![text_message("", "4915112345678", "no id")], vec![])]),
        notification(vec![(vec![text_message("wamid.1", "4915112345678", &"x".repeat(16 * 1024 + 1))], vec![])]),
        notification(vec![(
            vec![json!({ "from": "4915112345678", "id": "wamid.1", "timestamp": "soon", "type": "text" })],
            vec![],
        )]),
        b"[]".to_vec(),
    ];
    for body in invalid {
        assert_rejected(signed(&body), RejectReason::PayloadInvalid, &[]);
    }
}

#[test]
fn subscription_handshake() {
    let current = random_secret("");
    let previous = random_secret("");
    let tokens = vec![current.clone(), previous.clone()];
    let query = |token: &str, challenge: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("hub.mode", "subscribe")
            .append_pair("hub.verify_token", token)
            .append_pair("hub.challenge", challenge)
            .finish()
    };

    assert_eq!(
        whatsapp::verify_subscription(&query(current.expose_secret(), "1158201444"), &tokens).unwrap(),
        "1158201444"
    );
    assert_eq!(whatsapp::verify_subscription(&query(previous.expose_secret(), "a-b_c.9"), &tokens).unwrap(), "a-b_c.9");

    let wrong = random_secret("");
    let err = assert_rejected(
        whatsapp::verify_subscription(&query(wrong.expose_secret(), "1158201444"), &tokens),
        RejectReason::VerifyTokenMismatch,
        &[wrong.expose_secret(), current.expose_secret()],
    );
    assert!(err.reason().is_authentication_failure());
    let prefix = &current.expose_secret()[..10];
    assert_rejected(
        whatsapp::verify_subscription(&query(prefix, "1"), &tokens),
        RejectReason::VerifyTokenMismatch,
        &[],
    );

    let token = current.expose_secret();
    for bad_challenge in ["", "<script>alert(1)</script>", "a b", "ä", &"1".repeat(MAX_CHALLENGE_LEN + 1)] {
        let result = whatsapp::verify_subscription(&query(token, bad_challenge), &tokens);
        assert_rejected(result, RejectReason::PayloadInvalid, &[token]);
    }
    assert!(whatsapp::verify_subscription(&query(token, &"1".repeat(MAX_CHALLENGE_LEN)), &tokens).is_ok());

    let others = [
        format!("hub.mode=unsubscribe&hub.verify_token={token}&hub.challenge=1"),
        format!("hub.verify_token={token}&hub.challenge=1"),
        "hub.mode=subscribe&hub.challenge=1".to_owned(),
        format!("hub.mode=subscribe&hub.verify_token={token}"),
        format!("hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1&hub.challenge=2"),
        format!("hub.mode=subscribe&hub.verify_token=x&hub.verify_token={token}&hub.challenge=1"),
    ];
    for query in others {
        assert_rejected(whatsapp::verify_subscription(&query, &tokens), RejectReason::PayloadInvalid, &[token]);
    }

    assert_rejected(whatsapp::verify_subscription(&query(token, "1"), &[]), RejectReason::NoSecretConfigured, &[]);
}

#[test]
fn a_delivery_for_another_practices_phone_number_is_refused_when_numbers_are_bound() {
    let secret = random_secret("");
    let body = notification(vec![(vec![text_message("wamid.bound", "4915112345678", "Hallo")], vec![])]);
    let header = sign(&secret, &body);
    // The notification names phone_number_id 106540352242922.
    let mine = WhatsAppConfig { app_secrets: vec![secret.clone()], phone_number_ids: vec!["106540352242922".into()] };
    assert_eq!(receive(&mine, &header, &body).unwrap().messages.len(), 1);
    let theirs = WhatsAppConfig { app_secrets: vec![secret.clone()], phone_number_ids: vec!["999".into()] };
    let error = receive(&theirs, &header, &body).unwrap_err();
    assert_eq!(error.reason(), RejectReason::PayloadInvalid);
    // Unbound (one app, one practice): not checked.
    assert!(receive(&config(&[&secret]), &header, &body).is_ok());
}
