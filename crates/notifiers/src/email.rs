//! Email reminders through an SMTP relay (RFC 5321), with `lettre`: implicit TLS (port 465) or
//! STARTTLS (port 587, the default), rustls on ring with Mozilla's roots, optional SMTP AUTH.
//! Plain SMTP is accepted only towards a loopback address (a local relay or a test sink).
//!
//! Each reminder's `Message-ID` is derived from its id, so a reminder sent twice (the worker
//! retrying after a lost answer) carries the same id both times: some mail clients fold such
//! copies into one, and anyone looking can tell they are one reminder.

use crate::{Notifier, NotifyError, ReminderMessage, codes, is_loopback, refuse_problems, reminder_text};
use async_trait::async_trait;
use kernel::Secret;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// Plain connect, then STARTTLS, required (submission, port 587).
    #[default]
    Starttls,
    /// No TLS: only to a loopback host.
    None,
}

/// `reminders.email.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    /// Default: 465 for `tls`, 587 for `starttls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    /// With `username` (e.g. `PRAXIS__REMINDERS__EMAIL__PASSWORD`).
    #[serde(default)]
    pub password: Option<Secret<String>>,
    /// The sender, `Practice <reminders@example.org>` or a bare address.
    pub from: String,
    #[serde(default = "default_subject")]
    pub subject: String,
}

fn default_subject() -> String {
    "Appointment reminder".into()
}

impl SmtpSettings {
    /// Every problem of these settings, as (setting under `reminders.email`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let host_ok = !self.host.is_empty()
            && (self.host.parse::<std::net::IpAddr>().is_ok()
                || self.host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !host_ok {
            problems.push((
                "reminders.email.host",
                "must be a host name or IP address (no port: use reminders.email.port)".into(),
            ));
        }
        if self.port == Some(0) {
            problems.push(("reminders.email.port", "must not be 0".into()));
        }
        if self.security == SmtpSecurity::None && !is_loopback(&self.host) {
            problems.push(("reminders.email.security", "\"none\" (no TLS) is allowed only to a loopback host".into()));
        }
        if self.username.is_some() != self.password.is_some() {
            problems.push(("reminders.email.password", "set username and password together".into()));
        } else if self.password.as_ref().is_some_and(|p| p.expose_secret().is_empty()) {
            problems.push(("reminders.email.password", "must not be empty".into()));
        }
        if self.from.parse::<Mailbox>().is_err() {
            problems.push(("reminders.email.from", format!("{:?} is not an email address", self.from)));
        }
        if self.subject.trim().is_empty() || self.subject.chars().count() > 200 || self.subject.contains(['\r', '\n']) {
            problems.push(("reminders.email.subject", "must be one line of at most 200 characters".into()));
        }
        problems
    }
}

/// Sends reminders as plain-text emails.
#[derive(Debug)]
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of `Message-ID`s: the sender's domain.
    id_domain: String,
    subject: String,
}

impl SmtpNotifier {
    /// Fails on invalid settings (see [`SmtpSettings::problems`]).
    pub fn new(settings: SmtpSettings) -> Result<Self, String> {
        refuse_problems(settings.problems())?;
        let mut builder = match settings.security {
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host),
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)),
        }
        .map_err(|e| format!("reminders.email: {e}"))?
        .timeout(Some(Duration::from_secs(15)));
        if let Some(port) = settings.port {
            builder = builder.port(port);
        }
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().clone()));
        }
        let from: Mailbox = settings.from.parse().map_err(|e| format!("reminders.email.from: {e}"))?;
        let id_domain = from.email.domain().to_owned();
        Ok(Self { transport: builder.build(), from, id_domain, subject: settings.subject })
    }

    fn message(&self, reminder: &ReminderMessage) -> Result<Message, NotifyError> {
        let to: Mailbox =
            reminder.to.expose().parse().map_err(|_| NotifyError::Permanent { code: codes::INVALID_RECIPIENT })?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(self.subject.clone())
            .message_id(Some(format!("<{}@{}>", reminder.idempotency_key(), self.id_domain)))
            .header(ContentType::TEXT_PLAIN)
            .body(reminder_text(reminder))
            .map_err(|_| NotifyError::Permanent { code: codes::REJECTED })
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, reminder: &ReminderMessage) -> Result<(), NotifyError> {
        let message = self.message(reminder)?;
        // lettre's own timeout bounds the connect only; this bounds the whole dialogue.
        match tokio::time::timeout(crate::SEND_TIMEOUT, self.transport.send(message)).await {
            Ok(result) => result.map(|_| ()).map_err(|e| classify(&e)),
            Err(_) => Err(NotifyError::Temporary { code: codes::TIMEOUT }),
        }
    }
}

fn classify(error: &lettre::transport::smtp::Error) -> NotifyError {
    let reply = error.status().map(|code| code.to_string());
    // lettre does not say which command a reply answered; the enhanced status code (RFC 3463)
    // in the reply text does: 5.1.1-5.1.3 and 5.1.10 are about the recipient's address, where a
    // 550 for a refused sender or relaying says 5.7.x. The text is read here and never logged.
    let text = error.to_string();
    let about_recipient = ["5.1.1 ", "5.1.2 ", "5.1.3 ", "5.1.10 "].iter().any(|code| text.contains(code));
    match reply.as_deref() {
        // Authentication required / failed: the operator's credentials, not the recipient.
        Some("530" | "534" | "535" | "454") => NotifyError::Temporary { code: codes::PROVIDER_AUTH },
        Some("550" | "551" | "553") if about_recipient => NotifyError::Permanent { code: codes::INVALID_RECIPIENT },
        _ if error.is_permanent() => NotifyError::Permanent { code: codes::REJECTED },
        _ if error.is_transient() => NotifyError::Temporary { code: codes::PROVIDER_UNAVAILABLE },
        _ if error.is_timeout() => NotifyError::Temporary { code: codes::TIMEOUT },
        _ => NotifyError::Temporary { code: codes::CONNECTION_FAILED },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SmtpSettings {
        SmtpSettings {
            host: "smtp.example.org".into(),
            port: None,
            security: SmtpSecurity::Starttls,
            username: Some("reminders".into()),
            password: Some(Secret::new("generated-in-test".into())),
            from: "Praxis <reminders@example.org>".into(),
            subject: default_subject(),
        }
    }

    #[test]
    fn good_settings_have_no_problems() {
        assert_eq!(settings().problems(), vec![]);
        let local = SmtpSettings { host: "127.0.0.1".into(), security: SmtpSecurity::None, ..settings() };
        assert_eq!(local.problems(), vec![]);
        let v6 = SmtpSettings { host: "::1".into(), security: SmtpSecurity::None, ..settings() };
        assert_eq!(v6.problems(), vec![]);
    }

    #[test]
    fn every_bad_setting_is_named() {
        let bad = SmtpSettings {
            host: "smtp.example.org".into(),
            port: Some(0),
            security: SmtpSecurity::None,
            username: Some("reminders".into()),
            password: None,
            from: "not an address".into(),
            subject: "Reminder\r\nBcc: someone@example.org".into(),
        };
        let fields: Vec<&str> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "reminders.email.port",
                "reminders.email.security",
                "reminders.email.password",
                "reminders.email.from",
                "reminders.email.subject",
            ]
        );
        assert!(SmtpNotifier::new(bad).is_err());
        let with_port = SmtpSettings { host: "smtp.example.org:587".into(), ..settings() };
        assert_eq!(with_port.problems()[0].0, "reminders.email.host");
        let empty_password = SmtpSettings { password: Some(Secret::new(String::new())), ..settings() };
        assert_eq!(empty_password.problems()[0].0, "reminders.email.password");
    }
}
