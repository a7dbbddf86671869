//! WhatsApp reminders through Meta's Cloud API: `POST /{version}/{phone-number-id}/messages`
//! with a template message (<https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages>).
//!
//! A business may start a conversation only with a template Meta has approved, so the practice
//! registers one (for example `appointment_reminder`, body "Reminder: you have an appointment on
//! {{1}}. ...") and names it here; Praxis fills its one body parameter with the local start time.
//! The reminder's idempotency key travels as `biz_opaque_callback_data`, which Meta echoes in its
//! status webhooks.

use crate::http::{client, common_status_error, transport_error};
use crate::{Notifier, NotifyError, ReminderMessage, check_endpoint, codes, refuse_problems};
use async_trait::async_trait;
use kernel::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `reminders.whatsapp.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSettings {
    /// The Graph API origin (a local test double may be `http://127.0.0.1:...`).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The Graph API version, e.g. `v23.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The WhatsApp Business phone number id the reminders are sent from (digits).
    pub phone_number_id: String,
    /// A system user access token with `whatsapp_business_messaging` (e.g.
    /// `PRAXIS__REMINDERS__WHATSAPP__ACCESS_TOKEN`).
    pub access_token: Secret<String>,
    /// The approved template's name; its body has one parameter, the local start time.
    pub template: String,
    /// The template's language code, e.g. `en` or `de`.
    #[serde(default = "default_language")]
    pub language: String,
}

fn default_api_base() -> String {
    "https://graph.facebook.com".into()
}

fn default_api_version() -> String {
    "v23.0".into()
}

fn default_language() -> String {
    "en".into()
}

impl WhatsAppSettings {
    /// Every problem of these settings, as (setting under `reminders.whatsapp`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(message) = check_endpoint(&self.api_base) {
            problems.push(("reminders.whatsapp.api_base", message));
        }
        let version = self.api_version.strip_prefix('v').unwrap_or_default();
        if !version.split_once('.').is_some_and(|(major, minor)| is_digits(major) && is_digits(minor)) {
            problems.push((
                "reminders.whatsapp.api_version",
                format!("{:?} is not a version such as v23.0", self.api_version),
            ));
        }
        if !is_digits(&self.phone_number_id) {
            problems.push(("reminders.whatsapp.phone_number_id", "must be the phone number id (digits)".into()));
        }
        if self.access_token.expose_secret().trim().is_empty() {
            problems.push(("reminders.whatsapp.access_token", "must not be empty".into()));
        }
        let template_ok = !self.template.is_empty()
            && self.template.len() <= 512
            && self.template.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !template_ok {
            problems.push((
                "reminders.whatsapp.template",
                "must be a template name (lower-case letters, digits, _)".into(),
            ));
        }
        let language_ok = (2..=8).contains(&self.language.len())
            && self.language.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
        if !language_ok {
            problems.push((
                "reminders.whatsapp.language",
                format!("{:?} is not a language code such as en or pt_BR", self.language),
            ));
        }
        problems
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Sends reminders as WhatsApp template messages.
#[derive(Debug)]
pub struct WhatsAppCloudNotifier {
    http: reqwest::Client,
    url: String,
    settings: WhatsAppSettings,
}

impl WhatsAppCloudNotifier {
    /// Fails on invalid settings (see [`WhatsAppSettings::problems`]).
    pub fn new(settings: WhatsAppSettings) -> Result<Self, String> {
        refuse_problems(settings.problems())?;
        let url = format!(
            "{}/{}/{}/messages",
            settings.api_base.trim_end_matches('/'),
            settings.api_version,
            settings.phone_number_id
        );
        Ok(Self { http: client()?, url, settings })
    }

    fn body(&self, message: &ReminderMessage) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.to.expose(),
            "type": "template",
            "template": {
                "name": self.settings.template,
                "language": { "code": self.settings.language },
                "components": [{
                    "type": "body",
                    "parameters": [{ "type": "text", "text": message.local_start() }],
                }],
            },
            "biz_opaque_callback_data": message.idempotency_key(),
        })
    }
}

#[async_trait]
impl Notifier for WhatsAppCloudNotifier {
    async fn send(&self, message: &ReminderMessage) -> Result<(), NotifyError> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(self.settings.access_token.expose_secret())
            .json(&self.body(message))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        // The body of an error names the code. A success is a success even when its body is
        // odd: retrying it would send the message again (Meta takes no idempotency key).
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            if !body["messages"][0]["id"].is_string() {
                tracing::warn!(reminder_id = %message.reminder_id, "WhatsApp accepted the message without a message id");
            }
            return Ok(());
        }
        Err(classify(status, body["error"]["code"].as_i64()))
    }
}

/// Meta's error codes (<https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>).
fn classify(status: reqwest::StatusCode, code: Option<i64>) -> NotifyError {
    match code {
        // Throughput, spam and pair rate limits.
        Some(4 | 80007 | 130429 | 131048 | 131056) => NotifyError::Temporary { code: codes::RATE_LIMITED },
        // Token expired or invalid, permission missing.
        Some(0 | 3 | 10 | 190 | 200..=299) => NotifyError::Temporary { code: codes::PROVIDER_AUTH },
        // The sending account: locked, unpaid, number not registered, blocked by policy.
        Some(368 | 131031 | 131042 | 133010) => NotifyError::Temporary { code: codes::PROVIDER_CONFIG },
        // Generic and service errors.
        Some(1 | 2 | 131000 | 131016 | 133004) => NotifyError::Temporary { code: codes::PROVIDER_UNAVAILABLE },
        // Undeliverable, or not a WhatsApp user / not in the test recipients list.
        Some(131026 | 131030) => NotifyError::Permanent { code: codes::INVALID_RECIPIENT },
        // The template does not exist, is not approved, or its parameters do not fit.
        Some(132000..=132999) => NotifyError::Permanent { code: codes::TEMPLATE_REJECTED },
        _ => common_status_error(status).unwrap_or(NotifyError::Permanent { code: codes::REJECTED }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WhatsAppSettings {
        WhatsAppSettings {
            api_base: default_api_base(),
            api_version: default_api_version(),
            phone_number_id: "106540352242922".into(),
            access_token: Secret::new("generated-in-test".into()),
            template: "appointment_reminder".into(),
            language: "de".into(),
        }
    }

    #[test]
    fn good_settings_have_no_problems() {
        assert_eq!(settings().problems(), vec![]);
    }

    #[test]
    fn every_bad_setting_is_named() {
        let bad = WhatsAppSettings {
            api_base: "http://graph.facebook.com".into(),
            api_version: "23".into(),
            phone_number_id: "+49 151".into(),
            access_token: Secret::new(" ".into()),
            template: "Appointment Reminder".into(),
            language: "english please".into(),
        };
        let fields: Vec<&str> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "reminders.whatsapp.api_base",
                "reminders.whatsapp.api_version",
                "reminders.whatsapp.phone_number_id",
                "reminders.whatsapp.access_token",
                "reminders.whatsapp.template",
                "reminders.whatsapp.language",
            ]
        );
        assert!(WhatsAppCloudNotifier::new(bad).is_err());
    }

    #[test]
    fn errors_are_classed_by_metas_code_before_the_status() {
        let bad_request = reqwest::StatusCode::BAD_REQUEST;
        assert_eq!(classify(bad_request, Some(131026)), NotifyError::Permanent { code: codes::INVALID_RECIPIENT });
        assert_eq!(classify(bad_request, Some(132001)), NotifyError::Permanent { code: codes::TEMPLATE_REJECTED });
        assert_eq!(classify(bad_request, Some(130429)), NotifyError::Temporary { code: codes::RATE_LIMITED });
        assert_eq!(
            classify(reqwest::StatusCode::UNAUTHORIZED, Some(190)),
            NotifyError::Temporary { code: codes::PROVIDER_AUTH }
        );
        assert_eq!(classify(bad_request, Some(131042)), NotifyError::Temporary { code: codes::PROVIDER_CONFIG });
        assert_eq!(classify(bad_request, Some(100)), NotifyError::Permanent { code: codes::REJECTED });
        assert_eq!(
            classify(reqwest::StatusCode::BAD_GATEWAY, None),
            NotifyError::Temporary { code: codes::PROVIDER_UNAVAILABLE }
        );
    }
}
