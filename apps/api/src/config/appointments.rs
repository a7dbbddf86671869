//! The appointment settings: `[appointments]` (the bounds on bookings) and `[reminders]`
//! (planning, and the worker that sends them with its notifier). Each section validates itself
//! and yields the `scheduling` policy the use cases (`app::appointments`) are built with.

use super::Problem;
use scheduling::{BookingPolicy, ReminderChannel, ReminderPolicy, SchedulingError};
use serde::{Deserialize, Serialize};

/// `appointments.*`: the bounds on bookings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppointmentsConfig {
    /// Shortest appointment, in minutes.
    pub min_duration_minutes: u32,
    /// Longest appointment, in minutes (at most 1440).
    pub max_duration_minutes: u32,
    /// How far ahead an appointment may start, in days.
    pub max_lead_days: u32,
}

impl Default for AppointmentsConfig {
    fn default() -> Self {
        let policy = BookingPolicy::default();
        let minutes = |d: time::Duration| u32::try_from(d.whole_minutes()).unwrap_or(u32::MAX);
        Self {
            min_duration_minutes: minutes(policy.min_duration()),
            max_duration_minutes: minutes(policy.max_duration()),
            max_lead_days: u32::try_from(policy.max_lead_time().whole_days()).unwrap_or(u32::MAX),
        }
    }
}

impl AppointmentsConfig {
    /// The policy these settings describe.
    pub fn booking_policy(&self) -> Result<BookingPolicy, SchedulingError> {
        BookingPolicy::new(
            time::Duration::minutes(i64::from(self.min_duration_minutes)),
            time::Duration::minutes(i64::from(self.max_duration_minutes)),
            time::Duration::days(i64::from(self.max_lead_days)),
        )
    }

    /// Every problem of the section, naming the setting.
    pub fn problems(&self) -> Vec<Problem> {
        match self.booking_policy() {
            Ok(_) => Vec::new(),
            Err(error) => vec![Problem { field: policy_field(error.field()), message: error.to_string() }],
        }
    }
}

fn policy_field(field: &str) -> &'static str {
    match field {
        "min_duration" => "appointments.min_duration_minutes",
        "max_duration" => "appointments.max_duration_minutes",
        "max_lead_time" => "appointments.max_lead_days",
        "reminder_offsets" => "reminders.offsets_minutes",
        _ => "reminders.min_delay_after_booking_minutes",
    }
}

/// Which [`crate::reminders::Notifier`] delivers reminders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Writes one log line per reminder (ids, channel, time; never the recipient or the text)
    /// and sends nothing.
    #[default]
    Log,
    /// Sends through the provider of each channel: `[reminders.whatsapp]` (Meta's Cloud API),
    /// `[reminders.sms]` (Twilio), `[reminders.email]` (an SMTP relay). Every channel listed in
    /// `reminders.channels` needs its section.
    Providers,
}

/// `reminders.*`: planning and the worker that sends them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemindersConfig {
    /// Run the reminder worker in `praxis serve` (turn off on all but a few instances if wanted;
    /// several workers never send one reminder twice).
    pub enabled: bool,
    /// Seconds between the worker's rounds.
    pub interval_secs: u64,
    /// Most reminders one worker claims per practice and round.
    pub batch_size: u32,
    /// Seconds a claimed reminder stays reserved for its worker (a worker that dies leaves it to
    /// the others after this).
    pub lease_secs: u64,
    /// Delivery attempts before a reminder is given up as failed.
    pub max_attempts: u32,
    /// Reminders per appointment, in minutes before the start.
    pub offsets_minutes: Vec<u32>,
    /// No reminder is planned due sooner than this after booking.
    pub min_delay_after_booking_minutes: u32,
    /// Channels in order of preference; the first one the patient can be reached on is used.
    pub channels: Vec<String>,
    pub notifier: NotifierKind,
    /// WhatsApp template messages through Meta's Cloud API (with `notifier = "providers"`).
    pub whatsapp: Option<notifiers::whatsapp::WhatsAppSettings>,
    /// Text messages through Twilio (with `notifier = "providers"`).
    pub sms: Option<notifiers::twilio::TwilioSettings>,
    /// Emails through an SMTP relay (with `notifier = "providers"`).
    pub email: Option<notifiers::email::SmtpSettings>,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        let policy = ReminderPolicy::default();
        let minutes = |d: time::Duration| u32::try_from(d.whole_minutes()).unwrap_or(u32::MAX);
        Self {
            enabled: true,
            interval_secs: 30,
            batch_size: 50,
            lease_secs: 300,
            max_attempts: 5,
            offsets_minutes: policy.offsets().iter().map(|d| minutes(*d)).collect(),
            min_delay_after_booking_minutes: minutes(policy.min_delay_after_booking()),
            channels: ReminderChannel::ALL.iter().map(|c| c.as_str().to_owned()).collect(),
            notifier: NotifierKind::Log,
            whatsapp: None,
            sms: None,
            email: None,
        }
    }
}

impl RemindersConfig {
    /// The planning policy these settings describe.
    pub fn policy(&self) -> Result<ReminderPolicy, SchedulingError> {
        let offsets: Vec<time::Duration> =
            self.offsets_minutes.iter().map(|m| time::Duration::minutes(i64::from(*m))).collect();
        ReminderPolicy::new(&offsets, time::Duration::minutes(i64::from(self.min_delay_after_booking_minutes)))
    }

    /// The channels in order of preference (unknown names are reported by [`Self::problems`]).
    pub fn channel_preference(&self) -> Vec<ReminderChannel> {
        self.channels.iter().filter_map(|c| c.parse().ok()).collect()
    }

    /// The provider credentials of the configured channels (for the start-up line that says
    /// which secrets are set; a configured section cannot lack its required secret).
    pub fn secret_statuses(&self) -> Vec<crate::config::SecretStatus> {
        let status = |field, configured, required| crate::config::SecretStatus { field, configured, required };
        let mut statuses = Vec::new();
        if self.whatsapp.is_some() {
            statuses.push(status("reminders.whatsapp.access_token", true, true));
        }
        if self.sms.is_some() {
            statuses.push(status("reminders.sms.auth_token", true, true));
        }
        if let Some(email) = &self.email {
            statuses.push(status("reminders.email.password", email.password.is_some(), false));
        }
        statuses
    }

    /// Every problem of the section, naming the setting.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(error) = self.policy() {
            problems.push(Problem { field: policy_field(error.field()), message: error.to_string() });
        }
        for name in &self.channels {
            if name.parse::<ReminderChannel>().is_err() {
                problems.push(Problem {
                    field: "reminders.channels",
                    message: format!("{name:?} is not whatsapp, sms or email"),
                });
            }
        }
        if self.channels.is_empty() {
            problems.push(Problem { field: "reminders.channels", message: "list at least one channel".into() });
        }
        if self.interval_secs == 0 {
            problems.push(Problem { field: "reminders.interval_secs", message: "must be greater than 0".into() });
        }
        if !(1..=1000).contains(&self.batch_size) {
            problems.push(Problem { field: "reminders.batch_size", message: "must be between 1 and 1000".into() });
        }
        if self.lease_secs == 0 {
            problems.push(Problem { field: "reminders.lease_secs", message: "must be greater than 0".into() });
        }
        if self.max_attempts == 0 {
            problems.push(Problem { field: "reminders.max_attempts", message: "must be at least 1".into() });
        }
        let adapter_problems = self.whatsapp.iter().flat_map(notifiers::whatsapp::WhatsAppSettings::problems);
        let adapter_problems = adapter_problems
            .chain(self.sms.iter().flat_map(notifiers::twilio::TwilioSettings::problems))
            .chain(self.email.iter().flat_map(notifiers::email::SmtpSettings::problems));
        problems.extend(adapter_problems.map(|(field, message)| Problem { field, message }));
        if self.notifier == NotifierKind::Providers {
            let minimum = 2 * notifiers::SEND_TIMEOUT.as_secs();
            if self.lease_secs < minimum {
                problems.push(Problem {
                    field: "reminders.lease_secs",
                    message: format!(
                        "must be at least {minimum} with notifier = \"providers\" (room for a send within the lease)"
                    ),
                });
            }
            for channel in self.channel_preference() {
                let configured = match channel {
                    ReminderChannel::Whatsapp => self.whatsapp.is_some(),
                    ReminderChannel::Sms => self.sms.is_some(),
                    ReminderChannel::Email => self.email.is_some(),
                };
                if !configured {
                    problems.push(Problem {
                        field: "reminders.channels",
                        message: format!(
                            "{} is listed but [reminders.{}] is not configured (configure it or leave the channel out)",
                            channel.as_str(),
                            channel.as_str()
                        ),
                    });
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_scheduling_crates_policies() {
        assert_eq!(AppointmentsConfig::default().booking_policy().unwrap(), BookingPolicy::default());
        assert_eq!(RemindersConfig::default().policy().unwrap(), ReminderPolicy::default());
        assert!(AppointmentsConfig::default().problems().is_empty());
        assert!(RemindersConfig::default().problems().is_empty());
        assert_eq!(
            RemindersConfig::default().channel_preference(),
            [ReminderChannel::Whatsapp, ReminderChannel::Sms, ReminderChannel::Email]
        );
    }

    #[test]
    fn every_bad_setting_is_named() {
        let appointments =
            AppointmentsConfig { min_duration_minutes: 60, max_duration_minutes: 30, ..AppointmentsConfig::default() };
        let fields: Vec<&str> = appointments.problems().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["appointments.max_duration_minutes"]);
        let reminders = RemindersConfig {
            offsets_minutes: vec![60, 60],
            channels: vec!["fax".into()],
            interval_secs: 0,
            batch_size: 0,
            lease_secs: 0,
            max_attempts: 0,
            ..RemindersConfig::default()
        };
        let fields: Vec<&str> = reminders.problems().iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "reminders.offsets_minutes",
                "reminders.channels",
                "reminders.interval_secs",
                "reminders.batch_size",
                "reminders.lease_secs",
                "reminders.max_attempts"
            ]
        );
    }
}
