//! The adapters against what their providers really exchange:
//!
//! - WhatsApp Cloud API and Twilio: recorded exchanges (`tests/fixtures/*.json`, shapes and error
//!   bodies from the API reference named in each file) replayed by `kms_http::test_server::Replay`,
//!   which checks every request against the recorded one (path, JSON or form fields, headers);
//! - SMTP: a small SMTP server speaking RFC 5321 on a local port, recording the dialogue.
//!
//! Credentials are generated per run.

// Test code: a failed unwrap is a failed test with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtp;

use base64::Engine as _;
use kernel::{Pii, Secret, TenantId};
use kms_http::test_server::Replay;
use notifiers::twilio::{TwilioSettings, TwilioSmsNotifier};
use notifiers::whatsapp::{WhatsAppCloudNotifier, WhatsAppSettings};
use notifiers::{Notifier, NotifyError, ReminderMessage, codes};
use scheduling::ReminderChannel;
use time::macros::datetime;
use uuid::Uuid;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn message(channel: ReminderChannel, to: &str) -> ReminderMessage {
    ReminderMessage {
        reminder_id: Uuid::parse_str("0190f0a4-1b2c-7d3e-8f40-000000000001").unwrap(),
        tenant: TenantId::from_uuid(Uuid::now_v7()),
        appointment_id: Uuid::now_v7(),
        channel,
        to: Pii::new(to.to_owned()),
        appointment_start: datetime!(2026-11-24 13:30 UTC),
        time_zone: Some("Europe/Berlin".into()),
    }
}

fn generated_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn whatsapp(api_base: &str, token: &str) -> WhatsAppCloudNotifier {
    WhatsAppCloudNotifier::new(WhatsAppSettings {
        api_base: api_base.to_owned(),
        api_version: "v23.0".into(),
        phone_number_id: "106540352242922".into(),
        access_token: Secret::new(token.to_owned()),
        template: "appointment_reminder".into(),
        language: "de".into(),
    })
    .unwrap()
}

fn twilio(api_base: &str, token: &str) -> TwilioSmsNotifier {
    TwilioSmsNotifier::new(TwilioSettings {
        api_base: api_base.to_owned(),
        account_sid: format!("AC{}", "0".repeat(32)),
        api_key_sid: None,
        auth_token: Secret::new(token.to_owned()),
        from: Some("+15005550006".into()),
        messaging_service_sid: None,
    })
    .unwrap()
}

#[tokio::test]
async fn whatsapp_sends_the_approved_template_with_the_local_start_and_the_bearer_token() {
    let replay = Replay::new(FIXTURES, &["whatsapp_template_accepted"]);
    let server = replay.serve().await;
    let token = generated_secret();
    whatsapp(&server.url, &token).send(&message(ReminderChannel::Whatsapp, "+4915100000000")).await.unwrap();
    replay.finish();
    assert_eq!(server.requests()[0].header("authorization"), Some(format!("Bearer {token}").as_str()));
}

#[tokio::test]
async fn whatsapp_errors_become_codes_that_say_whether_to_retry() {
    let cases = [
        ("whatsapp_undeliverable", NotifyError::Permanent { code: codes::INVALID_RECIPIENT }),
        ("whatsapp_token_expired", NotifyError::Temporary { code: codes::PROVIDER_AUTH }),
        ("whatsapp_template_missing", NotifyError::Permanent { code: codes::TEMPLATE_REJECTED }),
    ];
    for (fixture, expected) in cases {
        let replay = Replay::new(FIXTURES, &[fixture]);
        let server = replay.serve().await;
        let result = whatsapp(&server.url, &generated_secret())
            .send(&message(ReminderChannel::Whatsapp, "+4915100000000"))
            .await;
        assert_eq!(result, Err(expected), "{fixture}");
        replay.finish();
    }
}

#[tokio::test]
async fn twilio_posts_the_reminder_text_with_basic_auth() {
    let replay = Replay::new(FIXTURES, &["twilio_message_queued"]);
    let server = replay.serve().await;
    let token = generated_secret();
    twilio(&server.url, &token).send(&message(ReminderChannel::Sms, "+4915100000000")).await.unwrap();
    replay.finish();
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("AC{}:{token}", "0".repeat(32)));
    assert_eq!(server.requests()[0].header("authorization"), Some(format!("Basic {expected}").as_str()));
}

#[tokio::test]
async fn twilio_errors_become_codes_that_say_whether_to_retry() {
    let cases = [
        ("twilio_unsubscribed", NotifyError::Permanent { code: codes::RECIPIENT_OPTED_OUT }),
        ("twilio_too_many_requests", NotifyError::Temporary { code: codes::RATE_LIMITED }),
        ("twilio_auth_failed", NotifyError::Temporary { code: codes::PROVIDER_AUTH }),
    ];
    for (fixture, expected) in cases {
        let replay = Replay::new(FIXTURES, &[fixture]);
        let server = replay.serve().await;
        let result =
            twilio(&server.url, &generated_secret()).send(&message(ReminderChannel::Sms, "+4915100000000")).await;
        assert_eq!(result, Err(expected), "{fixture}");
        replay.finish();
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_a_temporary_failure() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let result = twilio(&format!("http://127.0.0.1:{port}"), &generated_secret())
        .send(&message(ReminderChannel::Sms, "+4915100000000"))
        .await;
    assert_eq!(result, Err(NotifyError::Temporary { code: codes::CONNECTION_FAILED }));
}
