//! SMS reminders through Twilio's Messages API:
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP basic auth
//! (<https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>).
//!
//! Authenticate with an API key (`api_key_sid` + its secret as `auth_token`, Twilio's
//! recommendation: revocable on its own) or with the account SID and auth token. Send from a
//! number (`from`) or a Messaging Service (`messaging_service_sid`), exactly one of them.

use crate::http::{client, common_status_error, transport_error};
use crate::{Notifier, NotifyError, ReminderMessage, check_endpoint, codes, refuse_problems, reminder_text};
use async_trait::async_trait;
use kernel::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `reminders.sms.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    /// The API origin (a local test double may be `http://127.0.0.1:...`).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// `AC` and 32 hex digits.
    pub account_sid: String,
    /// `SK...`: authenticate with this API key; without it, with the account SID.
    #[serde(default)]
    pub api_key_sid: Option<String>,
    /// The API key's secret, or the account's auth token (e.g.
    /// `PRAXIS__REMINDERS__SMS__AUTH_TOKEN`).
    pub auth_token: Secret<String>,
    /// The sending number (E.164) or an alphanumeric sender id (up to 11 letters, digits and
    /// spaces, at least one letter; where the destination country allows it), or
    #[serde(default)]
    pub from: Option<String>,
    /// the Messaging Service (`MG...`) that picks one.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
}

fn default_api_base() -> String {
    "https://api.twilio.com".into()
}

/// `prefix` followed by 32 hex digits: Twilio's SIDs.
fn is_sid(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `+` and 8 to 15 digits.
fn is_e164(text: &str) -> bool {
    text.strip_prefix('+').is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// An alphanumeric sender id: 1 to 11 ASCII letters, digits and spaces, at least one letter.
fn is_alphanumeric_sender(text: &str) -> bool {
    (1..=11).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && text.bytes().any(|b| b.is_ascii_alphabetic())
}

impl TwilioSettings {
    /// Every problem of these settings, as (setting under `reminders.sms`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(message) = check_endpoint(&self.api_base) {
            problems.push(("reminders.sms.api_base", message));
        }
        if !is_sid(&self.account_sid, "AC") {
            problems.push(("reminders.sms.account_sid", "must be AC followed by 32 hex digits".into()));
        }
        if self.api_key_sid.as_deref().is_some_and(|sid| !is_sid(sid, "SK")) {
            problems.push(("reminders.sms.api_key_sid", "must be SK followed by 32 hex digits".into()));
        }
        if self.auth_token.expose_secret().trim().is_empty() {
            problems.push(("reminders.sms.auth_token", "must not be empty".into()));
        }
        match (&self.from, &self.messaging_service_sid) {
            (Some(from), None) if !is_e164(from) && !is_alphanumeric_sender(from) => {
                problems.push((
                    "reminders.sms.from",
                    "must be a phone number in E.164 form (+4930...) or an alphanumeric sender id".into(),
                ));
            }
            (None, Some(service)) if !is_sid(service, "MG") => {
                problems.push(("reminders.sms.messaging_service_sid", "must be MG followed by 32 hex digits".into()));
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => problems.push(("reminders.sms.from", "set exactly one of from and messaging_service_sid".into())),
        }
        problems
    }
}

/// Sends reminders as text messages through Twilio.
#[derive(Debug)]
pub struct TwilioSmsNotifier {
    http: reqwest::Client,
    url: String,
    settings: TwilioSettings,
}

impl TwilioSmsNotifier {
    /// Fails on invalid settings (see [`TwilioSettings::problems`]).
    pub fn new(settings: TwilioSettings) -> Result<Self, String> {
        refuse_problems(settings.problems())?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            settings.api_base.trim_end_matches('/'),
            settings.account_sid
        );
        Ok(Self { http: client()?, url, settings })
    }
}

#[async_trait]
impl Notifier for TwilioSmsNotifier {
    async fn send(&self, message: &ReminderMessage) -> Result<(), NotifyError> {
        let text = reminder_text(message);
        let mut form: Vec<(&str, &str)> = vec![("To", message.to.expose()), ("Body", &text)];
        match (&self.settings.from, &self.settings.messaging_service_sid) {
            (Some(from), _) => form.push(("From", from)),
            (None, Some(service)) => form.push(("MessagingServiceSid", service)),
            (None, None) => return Err(NotifyError::Permanent { code: codes::REJECTED }),
        }
        let username = self.settings.api_key_sid.as_deref().unwrap_or(&self.settings.account_sid);
        let response = self
            .http
            .post(&self.url)
            .basic_auth(username, Some(self.settings.auth_token.expose_secret()))
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        // A success is a success even when its body is odd: retrying it would send the message
        // again (Twilio takes no idempotency key on sends).
        if status.is_success() {
            if !body["sid"].as_str().is_some_and(|sid| sid.starts_with("SM") || sid.starts_with("MM")) {
                tracing::warn!(reminder_id = %message.reminder_id, "Twilio accepted the message without a message SID");
            }
            return Ok(());
        }
        Err(classify(status, body["code"].as_i64()))
    }
}

/// Twilio's error codes (<https://www.twilio.com/docs/api/errors>).
fn classify(status: reqwest::StatusCode, code: Option<i64>) -> NotifyError {
    match code {
        Some(20429 | 14107) => NotifyError::Temporary { code: codes::RATE_LIMITED },
        Some(20003 | 20005) => NotifyError::Temporary { code: codes::PROVIDER_AUTH },
        // The sender: region not enabled for the account, From not a valid or owned number,
        // From not reachable from this account.
        Some(21212 | 21408 | 21606 | 21659) => NotifyError::Temporary { code: codes::PROVIDER_CONFIG },
        // Invalid number, not a mobile number, not reachable by SMS.
        Some(21211 | 21612 | 21614) => NotifyError::Permanent { code: codes::INVALID_RECIPIENT },
        // The recipient replied STOP to this sender.
        Some(21610) => NotifyError::Permanent { code: codes::RECIPIENT_OPTED_OUT },
        _ => common_status_error(status).unwrap_or(NotifyError::Permanent { code: codes::REJECTED }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TwilioSettings {
        TwilioSettings {
            api_base: default_api_base(),
            account_sid: format!("AC{}", "0".repeat(32)),
            api_key_sid: None,
            auth_token: Secret::new("generated-in-test".into()),
            from: Some("+15005550006".into()),
            messaging_service_sid: None,
        }
    }

    #[test]
    fn good_settings_have_no_problems() {
        assert_eq!(settings().problems(), vec![]);
        let alphanumeric = TwilioSettings { from: Some("Praxis Mitte".chars().take(11).collect()), ..settings() };
        assert_eq!(alphanumeric.problems(), vec![]);
        let with_service = TwilioSettings {
            from: None,
            messaging_service_sid: Some(format!("MG{}", "a".repeat(32))),
            api_key_sid: Some(format!("SK{}", "b".repeat(32))),
            ..settings()
        };
        assert_eq!(with_service.problems(), vec![]);
    }

    #[test]
    fn every_bad_setting_is_named() {
        let bad = TwilioSettings {
            api_base: "ftp://api.twilio.com".into(),
            account_sid: "AC123".into(),
            api_key_sid: Some("key".into()),
            auth_token: Secret::new(String::new()),
            from: Some("030 1234".into()),
            messaging_service_sid: None,
        };
        let fields: Vec<&str> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "reminders.sms.api_base",
                "reminders.sms.account_sid",
                "reminders.sms.api_key_sid",
                "reminders.sms.auth_token",
                "reminders.sms.from",
            ]
        );
        let both = TwilioSettings { messaging_service_sid: Some(format!("MG{}", "a".repeat(32))), ..settings() };
        assert_eq!(both.problems()[0].0, "reminders.sms.from");
        let neither = TwilioSettings { from: None, ..settings() };
        assert_eq!(neither.problems()[0].0, "reminders.sms.from");
    }

    #[test]
    fn errors_are_classed_by_twilios_code_before_the_status() {
        let bad_request = reqwest::StatusCode::BAD_REQUEST;
        assert_eq!(classify(bad_request, Some(21211)), NotifyError::Permanent { code: codes::INVALID_RECIPIENT });
        assert_eq!(classify(bad_request, Some(21610)), NotifyError::Permanent { code: codes::RECIPIENT_OPTED_OUT });
        assert_eq!(
            classify(reqwest::StatusCode::TOO_MANY_REQUESTS, Some(20429)),
            NotifyError::Temporary { code: codes::RATE_LIMITED }
        );
        assert_eq!(
            classify(reqwest::StatusCode::UNAUTHORIZED, Some(20003)),
            NotifyError::Temporary { code: codes::PROVIDER_AUTH }
        );
        assert_eq!(classify(bad_request, Some(21408)), NotifyError::Temporary { code: codes::PROVIDER_CONFIG });
        assert_eq!(classify(bad_request, Some(21602)), NotifyError::Permanent { code: codes::REJECTED });
        assert_eq!(
            classify(reqwest::StatusCode::SERVICE_UNAVAILABLE, None),
            NotifyError::Temporary { code: codes::PROVIDER_UNAVAILABLE }
        );
    }
}
