//! Twilio: URL + sorted parameters, the JSON `bodySHA256` variant, and the port variants.

use crate::support::*;
use kernel::Secret;
use webhooks::{Headers, RejectReason, TwilioConfig, TwilioEvent, TwilioResource, WebhookError, twilio};

const URL: &str = "https://praxis.example.test/webhooks/twilio/sms?tenant=t1";
const URL_WITH_PORT: &str = "https://praxis.example.test:443/webhooks/twilio/sms?tenant=t1";

/// Twilio's rule written out by hand: URL, then each parameter as name + value, sorted by name
/// (then by value), decoded.
fn sign_params(token: &Secret<String>, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut signed = url.to_owned();
    for (name, value) in sorted {
        signed.push_str(name);
        signed.push_str(value);
    }
    hmac_sha1_base64(token.expose_secret().as_bytes(), signed.as_bytes())
}

fn form(params: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish().into_bytes()
}

fn receive(config: &TwilioConfig, signature: &str, body: &[u8], url: &str) -> Result<TwilioEvent, WebhookError> {
    let headers = Headers::new().with("X-Twilio-Signature", signature);
    twilio::receive(config, &request(&headers, body, url))
}

fn config(tokens: &[&Secret<String>]) -> TwilioConfig {
    TwilioConfig { auth_tokens: tokens.iter().map(|t| (*t).clone()).collect() }
}

const INBOUND_SMS: &[(&str, &str)] = &[
    ("ToCountry", "DE"),
    ("SmsMessageSid", "SM0123456789abcdef0123456789abcdef"),
    ("NumMedia", "0"),
    ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
    ("SmsStatus", "received"),
    ("Body", "Ich möchte den Termin absagen & neu buchen"),
    ("To", "+4930123456"),
    ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("From", "+4915112345678"),
    ("ApiVersion", "2010-04-01"),
];

#[test]
fn inbound_message_is_verified_and_parsed() {
    let token = random_secret("");
    let body = form(INBOUND_SMS);
    let event = receive(&config(&[&token]), &sign_params(&token, URL, INBOUND_SMS), &body, URL).unwrap();
    assert_eq!(event.resource, TwilioResource::Message { sid: "SM0123456789abcdef0123456789abcdef".into() });
    assert_eq!(event.account_sid, "AC0123456789abcdef0123456789abcdef");
    assert_eq!(event.from.as_ref().unwrap().expose(), "+4915112345678");
    assert_eq!(event.to.as_ref().unwrap().expose(), "+4930123456");
    assert_eq!(event.body.as_ref().unwrap().expose(), "Ich möchte den Termin absagen & neu buchen");
    assert_eq!(event.status.as_deref(), Some("received"));
    assert_eq!(event.dedupe_key(), "SM0123456789abcdef0123456789abcdef:received");
    let printed = format!("{event:?}");
    assert!(!printed.contains("Termin") && !printed.contains("+4915112345678"), "{printed}");
}

#[test]
fn parameters_are_signed_sorted_by_name_case_sensitively_then_by_value() {
    let token = random_secret("");
    // Sent in this order; signed in byte order of the names ("B" < "a"), a repeated name once
    // per value with the values sorted.
    let sent = [
        ("a", "1"),
        ("MessageSid", "SM1"),
        ("MediaUrl", "https://media.example.test/b"),
        ("B", "2"),
        ("AccountSid", "AC1"),
        ("MediaUrl", "https://media.example.test/a"),
    ];
    let expected_signed_string = format!(
        "{URL}AccountSidAC1B2MediaUrlhttps://media.example.test/aMediaUrlhttps://media.example.test/bMessageSidSM1a1"
    );
    let signature = hmac_sha1_base64(token.expose_secret().as_bytes(), expected_signed_string.as_bytes());
    let event = receive(&config(&[&token]), &signature, &form(&sent), URL).unwrap();
    assert_eq!(event.resource, TwilioResource::Message { sid: "SM1".into() });

    // The same parameters appended in the order they were sent do not verify.
    let unsorted: String = sent.iter().map(|(k, v)| format!("{k}{v}")).collect();
    let wrong = hmac_sha1_base64(token.expose_secret().as_bytes(), format!("{URL}{unsorted}").as_bytes());
    assert_rejected(receive(&config(&[&token]), &wrong, &form(&sent), URL), RejectReason::BadSignature, &[&wrong]);
}

#[test]
fn url_with_and_without_default_port() {
    let token = random_secret("");
    let body = form(INBOUND_SMS);
    let cfg = config(&[&token]);
    // Twilio signed one form of the URL; the endpoint is configured with the other.
    for (signed_url, configured_url) in
        [(URL, URL), (URL_WITH_PORT, URL), (URL, URL_WITH_PORT), (URL_WITH_PORT, URL_WITH_PORT)]
    {
        let signature = sign_params(&token, signed_url, INBOUND_SMS);
        assert!(receive(&cfg, &signature, &body, configured_url).is_ok(), "{signed_url} vs {configured_url}");
    }
    let http = "http://praxis.example.test/twilio";
    let signature = sign_params(&token, "http://praxis.example.test:80/twilio", INBOUND_SMS);
    assert!(receive(&cfg, &signature, &body, http).is_ok());

    // Any other difference in the URL is a different signature.
    for other in [
        "https://praxis.example.test:8443/webhooks/twilio/sms?tenant=t1",
        "http://praxis.example.test/webhooks/twilio/sms?tenant=t1",
        "https://praxis.example.test/webhooks/twilio/sms?tenant=t2",
        "https://praxis.example.test/webhooks/twilio/sms",
    ] {
        let signature = sign_params(&token, other, INBOUND_SMS);
        assert_rejected(receive(&cfg, &signature, &body, URL), RejectReason::BadSignature, &[]);
    }
}

#[test]
fn json_body_is_covered_by_body_sha256() {
    let token = random_secret("");
    let cfg = config(&[&token]);
    let body = br#"{"MessageSid":"SM9","AccountSid":"AC9","MessageStatus":"delivered","To":"+4915112345678"}"#;
    let url = format!("https://praxis.example.test/webhooks/twilio/status?bodySHA256={}", sha256_hex(body));
    let url_with_port = url.replacen(".test/", ".test:443/", 1);
    // The signature covers the URL alone.
    let signature = hmac_sha1_base64(token.expose_secret().as_bytes(), url.as_bytes());

    let event = receive(&cfg, &signature, body, &url).unwrap();
    assert_eq!(event.resource, TwilioResource::Message { sid: "SM9".into() });
    assert_eq!(event.dedupe_key(), "SM9:delivered");
    assert!(receive(&cfg, &signature, body, &url_with_port).is_ok());

    let tampered = br#"{"MessageSid":"SM9","AccountSid":"AC9","MessageStatus":"failed","To":"+4915112345678"}"#;
    assert_rejected(receive(&cfg, &signature, tampered, &url), RejectReason::BodyDigestMismatch, &[]);

    // A signature that also appended the parameters is not Twilio's JSON rule.
    let with_params = hmac_sha1_base64(token.expose_secret().as_bytes(), format!("{url}MessageSidSM9").as_bytes());
    assert_rejected(receive(&cfg, &with_params, body, &url), RejectReason::BadSignature, &[]);

    // Signed URL, but its bodySHA256 is not a digest of anything sent.
    let bogus_url = "https://praxis.example.test/webhooks/twilio/status?bodySHA256=zz";
    let bogus_signature = hmac_sha1_base64(token.expose_secret().as_bytes(), bogus_url.as_bytes());
    assert_rejected(receive(&cfg, &bogus_signature, body, bogus_url), RejectReason::BodyDigestMismatch, &[]);
}

#[test]
fn signature_failures() {
    let token = random_secret("");
    let old = random_secret("");
    let body = form(INBOUND_SMS);
    let good = sign_params(&token, URL, INBOUND_SMS);

    let mut tampered_params = INBOUND_SMS.to_vec();
    tampered_params[5] = ("Body", "Ich komme");
    assert_rejected(
        receive(&config(&[&token]), &good, &form(&tampered_params), URL),
        RejectReason::BadSignature,
        &[&good],
    );

    let by_old = sign_params(&old, URL, INBOUND_SMS);
    assert_rejected(
        receive(&config(&[&token]), &by_old, &body, URL),
        RejectReason::BadSignature,
        &[old.expose_secret()],
    );
    assert!(receive(&config(&[&token, &old]), &by_old, &body, URL).is_ok());

    for malformed in ["not base64!", "AAAA", &base64(&[0; 32])] {
        assert_rejected(receive(&config(&[&token]), malformed, &body, URL), RejectReason::MalformedHeader, &[]);
    }
    let no_header = Headers::new();
    assert_rejected(
        twilio::receive(&config(&[&token]), &request(&no_header, &body, URL)),
        RejectReason::MissingHeader,
        &[],
    );
    assert_rejected(receive(&config(&[]), &good, &body, URL), RejectReason::NoSecretConfigured, &[]);
    assert_rejected(
        receive(&config(&[&token]), &good, &body, "praxis.example.test/x"),
        RejectReason::InvalidConfiguration,
        &[],
    );
}

#[test]
fn call_status_callback() {
    let token = random_secret("");
    let params = [
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallStatus", "completed"),
        ("From", "+4915112345678"),
        ("To", "+4930123456"),
        ("Direction", "inbound"),
    ];
    let event = receive(&config(&[&token]), &sign_params(&token, URL, &params), &form(&params), URL).unwrap();
    assert_eq!(event.resource, TwilioResource::Call { sid: "CA0123456789abcdef0123456789abcdef".into() });
    assert_eq!(event.status.as_deref(), Some("completed"));
    assert_eq!(event.body, None);
    assert_eq!(event.dedupe_key(), "CA0123456789abcdef0123456789abcdef:completed");
}

#[test]
fn payload_shapes() {
    let token = random_secret("");
    let cfg = config(&[&token]);
    let invalid: [&[(&str, &str)]; 5] = [
        &[("AccountSid", "AC1"), ("Body", "no sid")],
        &[("MessageSid", "SM1"), ("Body", "no account")],
        &[("MessageSid", "SM1"), ("MessageSid", "SM2"), ("AccountSid", "AC1")],
        &[("MessageSid", "SM 1"), ("AccountSid", "AC1")],
        &[("CallSid", ""), ("AccountSid", "AC1")],
    ];
    for params in invalid {
        let result = receive(&cfg, &sign_params(&token, URL, params), &form(params), URL);
        assert_rejected(result, RejectReason::PayloadInvalid, &[]);
    }
    let long_body = "x".repeat(16 * 1024 + 1);
    let params = [("MessageSid", "SM1"), ("AccountSid", "AC1"), ("Body", long_body.as_str())];
    assert_rejected(
        receive(&cfg, &sign_params(&token, URL, &params), &form(&params), URL),
        RejectReason::PayloadInvalid,
        &[],
    );
}

/// Twilio signs the decoded parameter values, so two encodings of the same value carry the same
/// signature: `+`, `%20` and a raw space all decode to a space, `%2b` and `%2B` to a plus.
/// Recorded here because these are the ways a changed byte can still verify, and they change
/// nothing that is read.
#[test]
fn signature_covers_decoded_values() {
    let token = random_secret("");
    let params = [("MessageSid", "SM1"), ("AccountSid", "AC1"), ("Body", "hello world +1")];
    let signature = sign_params(&token, URL, &params);
    for body in [
        "MessageSid=SM1&AccountSid=AC1&Body=hello+world+%2B1",
        "MessageSid=SM1&AccountSid=AC1&Body=hello%20world%20%2b1",
        "MessageSid=SM1&AccountSid=AC1&Body=hello world %2B1",
    ] {
        let event = receive(&config(&[&token]), &signature, body.as_bytes(), URL).unwrap();
        assert_eq!(event.body.unwrap().expose(), "hello world +1");
    }
}

/// Names and values are concatenated without separators, so `MessageSid=SM1` sent as
/// `MessageSid&SM1` (two parameters with empty values) sorts into the same signed string. The
/// signature cannot tell; the parser refuses the empty SID.
#[test]
fn separator_ambiguity_is_caught_by_the_parser() {
    let token = random_secret("");
    let params = [("AccountSid", "AC1"), ("MessageSid", "SM1"), ("SmsStatus", "received")];
    let signature = sign_params(&token, URL, &params);
    let regrouped = b"AccountSid=AC1&MessageSid&SM1&SmsStatus=received";
    assert_rejected(receive(&config(&[&token]), &signature, regrouped, URL), RejectReason::PayloadInvalid, &[]);
}
