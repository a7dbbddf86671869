//! Reminder delivery: the [`Notifier`] port the reminder worker sends through, the default
//! [`LoggingNotifier`], and adapters for real channels:
//!
//! - [`whatsapp::WhatsAppCloudNotifier`]: a WhatsApp Business template message through Meta's
//!   Cloud API (business-initiated messages must use an approved template);
//! - [`twilio::TwilioSmsNotifier`]: a text message through Twilio's Messages API;
//! - [`email::SmtpNotifier`]: an email through an SMTP relay (implicit TLS or STARTTLS).
//!
//! [`ChannelNotifier`] routes each reminder to the adapter of its channel.
//!
//! What a reminder says is fixed here ([`reminder_text`]): the appointment's local start time and
//! nothing else. No name, no therapist, no kind of treatment: a message on a lock screen or in a
//! shared inbox must not reveal that someone is in therapy, and providers keep what they carry.
//! The recipient (a phone number or email address) is personal data: adapters never log it, and
//! their errors carry codes, never provider text (which often echoes the recipient).

pub mod email;
mod http;
pub mod twilio;
pub mod whatsapp;

use async_trait::async_trait;
use kernel::{Pii, TenantId};
use scheduling::ReminderChannel;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// The longest one send may take, whatever the adapter does inside (a relay that accepts the
/// connection and then stalls must not hold the reminder worker). The worker stops taking
/// reminders from a claimed batch once less than this is left of the batch's lease.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A reminder ready to go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderMessage {
    /// The reminder's id; also the idempotency key: every attempt of one reminder carries it.
    pub reminder_id: Uuid,
    pub tenant: TenantId,
    pub appointment_id: Uuid,
    pub channel: ReminderChannel,
    /// The phone number (E.164) or email address. Personal data: never logged.
    pub to: Pii<String>,
    /// The appointment's start (UTC).
    pub appointment_start: OffsetDateTime,
    /// The therapist's time zone (IANA), to show the start in local time.
    pub time_zone: Option<String>,
}

impl ReminderMessage {
    /// The idempotency key of this reminder (stable across attempts).
    pub fn idempotency_key(&self) -> String {
        format!("praxis-reminder-{}", self.reminder_id)
    }

    /// The appointment's start as the therapist's wall-clock time (UTC when no zone is known).
    pub fn local_start(&self) -> String {
        scheduling::local_wall_time(self.appointment_start, self.time_zone.as_deref())
    }
}

/// The text of a reminder (SMS and email; WhatsApp sends its template with [`ReminderMessage::local_start`]
/// as the one parameter).
pub fn reminder_text(message: &ReminderMessage) -> String {
    format!(
        "Reminder: you have an appointment on {}. If you cannot come, please let the practice know.",
        message.local_start()
    )
}

/// Why a delivery failed. Codes, not provider text (which may echo the recipient).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying: timeout, no connection, rate limit, the provider's 5xx, and also a
    /// refused credential or sender setting (an operator's mistake, not the patient's: fixed
    /// within the reminder's remaining attempts, the retries still deliver).
    #[error("temporary delivery failure: {code}")]
    Temporary { code: &'static str },
    /// Retrying cannot help: the recipient is invalid or opted out, the provider refused the
    /// message.
    #[error("permanent delivery failure: {code}")]
    Permanent { code: &'static str },
}

impl NotifyError {
    pub const fn code(&self) -> &'static str {
        match self {
            NotifyError::Temporary { code } | NotifyError::Permanent { code } => code,
        }
    }
}

/// The reason codes adapters report (recorded with a failed reminder).
pub mod codes {
    pub const TIMEOUT: &str = "timeout";
    pub const CONNECTION_FAILED: &str = "connection_failed";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const PROVIDER_UNAVAILABLE: &str = "provider_unavailable";
    pub const PROVIDER_AUTH: &str = "provider_auth";
    /// The provider refused because of the sender's account or settings (sender number not
    /// registered, region not enabled, account locked or unpaid): the operator's to fix.
    pub const PROVIDER_CONFIG: &str = "provider_config";
    pub const INVALID_RECIPIENT: &str = "invalid_recipient";
    pub const RECIPIENT_OPTED_OUT: &str = "recipient_opted_out";
    pub const TEMPLATE_REJECTED: &str = "template_rejected";
    pub const REJECTED: &str = "rejected";
    pub const NO_ADAPTER: &str = "no_adapter_for_channel";
}

/// Sends a reminder on its channel.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    async fn send(&self, message: &ReminderMessage) -> Result<(), NotifyError>;
}

/// The default notifier: one log line per reminder with ids, channel and time, never the
/// recipient; sends nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoggingNotifier;

#[async_trait]
impl Notifier for LoggingNotifier {
    async fn send(&self, message: &ReminderMessage) -> Result<(), NotifyError> {
        tracing::info!(
            reminder_id = %message.reminder_id,
            tenant = %message.tenant,
            appointment_id = %message.appointment_id,
            channel = message.channel.as_str(),
            appointment_start = %message.appointment_start,
            "appointment reminder (logging notifier: nothing sent)"
        );
        Ok(())
    }
}

/// Sends each reminder through the adapter configured for its channel.
#[derive(Debug, Default, Clone)]
pub struct ChannelNotifier {
    pub whatsapp: Option<Arc<dyn Notifier>>,
    pub sms: Option<Arc<dyn Notifier>>,
    pub email: Option<Arc<dyn Notifier>>,
}

impl ChannelNotifier {
    /// Whether a reminder on `channel` has an adapter to go through.
    pub fn serves(&self, channel: ReminderChannel) -> bool {
        self.adapter(channel).is_some()
    }

    fn adapter(&self, channel: ReminderChannel) -> Option<&Arc<dyn Notifier>> {
        match channel {
            ReminderChannel::Whatsapp => self.whatsapp.as_ref(),
            ReminderChannel::Sms => self.sms.as_ref(),
            ReminderChannel::Email => self.email.as_ref(),
        }
    }
}

#[async_trait]
impl Notifier for ChannelNotifier {
    async fn send(&self, message: &ReminderMessage) -> Result<(), NotifyError> {
        let Some(adapter) = self.adapter(message.channel) else {
            // Configuration validation refuses a channel without an adapter; should one slip
            // through, the reminder fails visibly instead of being reported as sent.
            return Err(NotifyError::Permanent { code: codes::NO_ADAPTER });
        };
        let result = match tokio::time::timeout(SEND_TIMEOUT, adapter.send(message)).await {
            Ok(result) => result,
            Err(_) => Err(NotifyError::Temporary { code: codes::TIMEOUT }),
        };
        match &result {
            Ok(()) => tracing::info!(
                reminder_id = %message.reminder_id,
                channel = message.channel.as_str(),
                "appointment reminder handed to the provider"
            ),
            Err(error) => tracing::warn!(
                reminder_id = %message.reminder_id,
                channel = message.channel.as_str(),
                code = error.code(),
                "appointment reminder not delivered"
            ),
        }
        result
    }
}

/// Whether `url` is an acceptable provider endpoint: `https`, or `http` to a loopback address
/// (a local test double). Credentials travel to it. Messages never repeat the URL (it might
/// hold userinfo).
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(parsed.host_str().unwrap_or_default()) => Ok(()),
        _ => Err("must be https (plain http only to a loopback address)".into()),
    }
}

/// The first of an adapter's settings problems as an error (adapters refuse to be built from
/// settings that configuration validation would refuse).
pub(crate) fn refuse_problems(problems: Vec<(&'static str, String)>) -> Result<(), String> {
    match problems.into_iter().next() {
        Some((field, message)) => Err(format!("{field}: {message}")),
        None => Ok(()),
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn message(channel: ReminderChannel) -> ReminderMessage {
        ReminderMessage {
            reminder_id: Uuid::nil(),
            tenant: TenantId::from_uuid(Uuid::nil()),
            appointment_id: Uuid::nil(),
            channel,
            to: Pii::new("+4915100000000".into()),
            appointment_start: datetime!(2026-11-24 13:30 UTC),
            time_zone: Some("Europe/Berlin".into()),
        }
    }

    #[test]
    fn the_text_names_the_local_time_and_nothing_about_the_patient_or_treatment() {
        let text = reminder_text(&message(ReminderChannel::Sms));
        assert_eq!(
            text,
            "Reminder: you have an appointment on 2026-11-24 14:30 (Europe/Berlin). If you cannot come, please let the practice know."
        );
    }

    #[test]
    fn the_idempotency_key_is_stable_per_reminder_and_the_recipient_does_not_print() {
        let message = ReminderMessage { reminder_id: Uuid::from_u128(7), ..message(ReminderChannel::Sms) };
        assert_eq!(message.idempotency_key(), message.clone().idempotency_key());
        assert!(message.idempotency_key().ends_with(&Uuid::from_u128(7).to_string()));
        assert!(!format!("{message:?}").contains("4915100000000"), "the recipient must not print");
    }

    #[derive(Debug)]
    struct Fixed(Result<(), NotifyError>);

    #[async_trait]
    impl Notifier for Fixed {
        async fn send(&self, _: &ReminderMessage) -> Result<(), NotifyError> {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn each_channel_goes_to_its_own_adapter_and_a_missing_one_fails_permanently() {
        let notifier = ChannelNotifier {
            whatsapp: Some(Arc::new(Fixed(Ok(())))),
            sms: Some(Arc::new(Fixed(Err(NotifyError::Temporary { code: codes::TIMEOUT })))),
            email: None,
        };
        assert_eq!(notifier.send(&message(ReminderChannel::Whatsapp)).await, Ok(()));
        assert_eq!(
            notifier.send(&message(ReminderChannel::Sms)).await,
            Err(NotifyError::Temporary { code: codes::TIMEOUT })
        );
        assert_eq!(
            notifier.send(&message(ReminderChannel::Email)).await,
            Err(NotifyError::Permanent { code: codes::NO_ADAPTER })
        );
        assert!(notifier.serves(ReminderChannel::Whatsapp) && !notifier.serves(ReminderChannel::Email));
    }

    #[derive(Debug)]
    struct Stalled;

    #[async_trait]
    impl Notifier for Stalled {
        async fn send(&self, _: &ReminderMessage) -> Result<(), NotifyError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_that_never_ends_is_a_timeout() {
        let notifier = ChannelNotifier { sms: Some(Arc::new(Stalled)), ..ChannelNotifier::default() };
        assert_eq!(
            notifier.send(&message(ReminderChannel::Sms)).await,
            Err(NotifyError::Temporary { code: codes::TIMEOUT })
        );
    }

    #[test]
    fn endpoints_must_be_https_except_on_loopback() {
        assert!(check_endpoint("https://graph.facebook.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("http://[::1]:8080").is_ok());
        assert!(check_endpoint("http://localhost:8080").is_ok());
        assert!(check_endpoint("http://api.twilio.com").is_err());
        let with_userinfo = check_endpoint("https://user:pw@api.twilio.com").unwrap_err();
        assert!(!with_userinfo.contains("pw"), "{with_userinfo}");
        assert!(check_endpoint("not a url").is_err());
    }
}
