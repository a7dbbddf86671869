//! Property: for every provider, changing any single byte of a correctly signed body gets the
//! request rejected (and the untouched body accepted, so the property is not vacuous).

use crate::support::*;
use kernel::Secret;
use proptest::prelude::*;
use std::sync::LazyLock;
use webhooks::{
    Headers, InboundRequest, ProviderConfig, RejectReason, StandardConfig, StandardSecret, StripeConfig, TwilioConfig,
    VapiConfig, WhatsAppConfig, receive,
};

const URL: &str = "https://praxis.example.test/webhooks/in?tenant=t1";

struct Case {
    config: ProviderConfig,
    headers: Headers,
    body: Vec<u8>,
    url: String,
}

impl Case {
    fn receive(&self, body: &[u8]) -> Result<webhooks::WebhookEvent, webhooks::WebhookError> {
        receive(&self.config, &InboundRequest { headers: &self.headers, body, public_url: &self.url, now: NOW })
    }
}

fn stripe() -> Case {
    let secret = random_secret("whsec_");
    let body = br#"{"id":"evt_1","type":"payment_intent.succeeded","livemode":false,"data":{"object":{"id":"pi_1","metadata":{}}}}"#;
    let t = NOW.unix_timestamp().to_string();
    let sig = hmac_sha256_hex(secret.expose_secret().as_bytes(), &concat(&[t.as_bytes(), b".", body]));
    Case {
        headers: Headers::new().with("stripe-signature", format!("t={t},v1={sig}")),
        config: ProviderConfig::Stripe(StripeConfig::new(vec![secret])),
        body: body.to_vec(),
        url: URL.into(),
    }
}

fn whatsapp() -> Case {
    let secret = random_secret("");
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"from":"4915112345678","id":"wamid.1","timestamp":"1772366400","type":"text","text":{"body":"STOP"}}]}}]}]}"#;
    let sig = format!("sha256={}", hmac_sha256_hex(secret.expose_secret().as_bytes(), body));
    Case {
        headers: Headers::new().with("x-hub-signature-256", sig),
        config: ProviderConfig::WhatsApp(WhatsAppConfig { app_secrets: vec![secret], phone_number_ids: Vec::new() }),
        body: body.to_vec(),
        url: URL.into(),
    }
}

/// A form body without `+`, spaces or percent-escapes with letters: Twilio signs decoded values,
/// so `+` and a space, or `%2b` and `%2B`, are the same value by design (see tests/twilio.rs).
/// Twilio also concatenates names and values without separators, so turning the `=` of
/// `MessageSid=SM1` into `&` yields parameters `MessageSid` and `SM1` with empty values whose
/// sorted concatenation is unchanged: that request verifies, and is refused by the parser
/// (an empty SID or status is not accepted) instead.
fn twilio_form() -> Case {
    let token = random_secret("");
    let body = b"MessageSid=SM1&AccountSid=AC1&From=4915112345678&Body=Termin%20absagen%21&SmsStatus=received";
    let signed = format!("{URL}AccountSidAC1BodyTermin absagen!From4915112345678MessageSidSM1SmsStatusreceived");
    Case {
        headers: Headers::new()
            .with("x-twilio-signature", hmac_sha1_base64(token.expose_secret().as_bytes(), signed.as_bytes())),
        config: ProviderConfig::Twilio(TwilioConfig { auth_tokens: vec![token] }),
        body: body.to_vec(),
        url: URL.into(),
    }
}

fn twilio_json() -> Case {
    let token = random_secret("");
    let body = br#"{"MessageSid":"SM1","AccountSid":"AC1","MessageStatus":"delivered"}"#;
    let url = format!("{URL}&bodySHA256={}", sha256_hex(body));
    Case {
        headers: Headers::new()
            .with("x-twilio-signature", hmac_sha1_base64(token.expose_secret().as_bytes(), url.as_bytes())),
        config: ProviderConfig::Twilio(TwilioConfig { auth_tokens: vec![token] }),
        body: body.to_vec(),
        url,
    }
}

fn vapi() -> Case {
    let secret = random_secret("");
    let body = br#"{"message":{"type":"status-update","status":"ended","call":{"id":"call-1"}}}"#;
    let t = (NOW.unix_timestamp() * 1000).to_string();
    let sig = hmac_sha256_hex(secret.expose_secret().as_bytes(), &concat(&[t.as_bytes(), b".", body]));
    Case {
        headers: Headers::new().with("x-signature", sig).with("x-timestamp", t),
        config: ProviderConfig::Vapi(VapiConfig::hmac(vec![secret])),
        body: body.to_vec(),
        url: URL.into(),
    }
}

fn standard() -> Case {
    let key = random_bytes(32);
    let secret = StandardSecret::parse(&Secret::new(format!("whsec_{}", base64(&key)))).unwrap();
    let body = br#"{"type":"invoice.paid","data":{"id":1}}"#;
    let t = NOW.unix_timestamp().to_string();
    let sig = base64(&hmac_sha256(&key, &concat(&[b"msg_1.", t.as_bytes(), b".", body])));
    Case {
        headers: Headers::new()
            .with("webhook-id", "msg_1")
            .with("webhook-timestamp", t)
            .with("webhook-signature", format!("v1,{sig}")),
        config: ProviderConfig::Standard(StandardConfig { secrets: vec![secret] }),
        body: body.to_vec(),
        url: URL.into(),
    }
}

static CASES: LazyLock<Vec<Case>> =
    LazyLock::new(|| vec![stripe(), whatsapp(), twilio_form(), twilio_json(), vapi(), standard()]);

#[test]
fn untouched_bodies_are_accepted() {
    for case in CASES.iter() {
        let event = case.receive(&case.body).unwrap();
        assert_eq!(event.provider(), case.config.provider());
        assert!(!event.dedupe_keys().is_empty());
    }
}

proptest! {
    #[test]
    fn any_single_changed_byte_is_rejected(index in 0..6usize, position in any::<usize>(), mask in 1..=255u8) {
        let case = &CASES[index];
        let err = case.receive(&flip(&case.body, position, mask)).unwrap_err();
        let twilio_form = index == 2;
        prop_assert!(
            matches!(err.reason(), RejectReason::BadSignature | RejectReason::BodyDigestMismatch)
                || (twilio_form && err.reason() == RejectReason::PayloadInvalid),
            "{} {}", case.config.provider(), err
        );
    }
}

/// The same property over every position and every change of each body, not a sample.
#[test]
fn every_single_changed_byte_is_rejected() {
    for (index, case) in CASES.iter().enumerate() {
        for position in 0..case.body.len() {
            for mask in 1..=255u8 {
                let err = case.receive(&flip(&case.body, position, mask)).unwrap_err();
                let twilio_form = index == 2;
                assert!(
                    matches!(err.reason(), RejectReason::BadSignature | RejectReason::BodyDigestMismatch)
                        || (twilio_form && err.reason() == RejectReason::PayloadInvalid),
                    "{} position {position} mask {mask}: {err}",
                    case.config.provider()
                );
            }
        }
    }
}
