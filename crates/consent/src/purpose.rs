//! What a consent is for ([`Purpose`]), how its evidence was collected ([`Channel`]), and which
//! purpose an inbound "STOP" withdraws ([`marketing_purpose_for_channel`]).

use crate::closed_set::closed_set;
use crate::error::ConsentError;

closed_set! {
    /// What a patient consents to. Closed: a sender asks [`crate::may_contact`] for exactly one of
    /// these, and a regulator can be shown the full list. Consent is per purpose (GDPR Art. 6(1)(a)
    /// "for one or more specific purposes"), never one blanket yes.
    pub enum Purpose (field: "purpose", error: ConsentError) {
        /// Processing the patient's personal (health) data by the practice.
        DataProcessing => "data_processing",
        /// Promotional messages over WhatsApp.
        MarketingWhatsapp => "marketing_whatsapp",
        /// Promotional messages by email.
        MarketingEmail => "marketing_email",
        /// Promotional messages by SMS.
        MarketingSms => "marketing_sms",
        /// Reminders of booked appointments.
        AppointmentReminders => "appointment_reminders",
        /// Messages about the course of the patient's own treatment.
        TreatmentUpdates => "treatment_updates",
        /// Passing the patient's data to a third party (insurer, another practitioner).
        ThirdPartySharing => "third_party_sharing",
    }
}

impl Purpose {
    /// True for the promotional purposes.
    pub const fn is_marketing(self) -> bool {
        matches!(self, Purpose::MarketingWhatsapp | Purpose::MarketingEmail | Purpose::MarketingSms)
    }

    /// The purposes that must *also* be granted before this one may be acted on.
    ///
    /// Marketing needs [`Purpose::DataProcessing`] as well: marketing has no legal basis but
    /// consent, and it uses the patient's data for something beyond their care, so a patient who
    /// withdrew consent to the processing of their data must not keep receiving promotions because
    /// a separate marketing flag was left on. Reminders, treatment updates and third-party sharing
    /// stand on their own: a practice may process data for care on another legal basis (treatment
    /// contract, GDPR Art. 9(2)(h)) and never record `data_processing` as a consent at all, and a
    /// reminder must not silently stop for that reason. `data_processing` itself needs nothing.
    pub const fn prerequisites(self) -> &'static [Purpose] {
        if self.is_marketing() { &[Purpose::DataProcessing] } else { &[] }
    }
}

closed_set! {
    /// How the evidence of a change was collected.
    pub enum Channel (field: "channel", error: ConsentError) {
        /// A web form (the patient portal, a booking page).
        Web => "web",
        /// A signed paper form, recorded at the desk.
        Paper => "paper",
        /// A WhatsApp message (e.g. an inbound "STOP" or "YES").
        Whatsapp => "whatsapp",
        /// An SMS.
        Sms => "sms",
        /// An email.
        Email => "email",
        /// A telephone call, recorded by the member of staff who took it.
        Phone => "phone",
    }
}

closed_set! {
    /// A messaging channel that inbound messages (and so opt-outs such as "STOP") arrive on.
    pub enum InboundChannel (field: "inbound_channel", error: ConsentError) {
        /// WhatsApp (Business API).
        WhatsApp => "whatsapp",
        /// SMS.
        Sms => "sms",
        /// Email.
        Email => "email",
    }
}

impl InboundChannel {
    /// The evidence channel an inbound message on this channel is recorded with.
    pub const fn evidence_channel(self) -> Channel {
        match self {
            InboundChannel::WhatsApp => Channel::Whatsapp,
            InboundChannel::Sms => Channel::Sms,
            InboundChannel::Email => Channel::Email,
        }
    }
}

/// The marketing purpose an opt-out received on `channel` withdraws: a "STOP" over WhatsApp
/// withdraws `marketing_whatsapp`, over SMS `marketing_sms`, by email `marketing_email`.
///
/// Only that one purpose: a STOP on one channel says "not here", not "not at all", and it never
/// touches appointment reminders or treatment updates, which the patient would have to withdraw
/// explicitly (a reminder that silently stops is a missed appointment).
pub const fn marketing_purpose_for_channel(channel: InboundChannel) -> Purpose {
    match channel {
        InboundChannel::WhatsApp => Purpose::MarketingWhatsapp,
        InboundChannel::Sms => Purpose::MarketingSms,
        InboundChannel::Email => Purpose::MarketingEmail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConsentError;
    use std::collections::HashSet;

    fn round_trips<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + std::fmt::Debug + PartialEq + std::str::FromStr + serde::Serialize + serde::de::DeserializeOwned,
        T::Err: std::fmt::Debug,
    {
        let mut spellings = HashSet::new();
        for &member in all {
            let text = as_str(member);
            assert!(spellings.insert(text), "{text} spelled twice");
            assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{text} is not snake_case");
            assert_eq!(text.parse::<T>().unwrap(), member);
            let json = serde_json::to_string(&member).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), member);
        }
    }

    #[test]
    fn spellings_are_stable_snake_case_and_round_trip() {
        round_trips(Purpose::ALL, Purpose::as_str);
        round_trips(Channel::ALL, Channel::as_str);
        round_trips(InboundChannel::ALL, InboundChannel::as_str);
        // Pinned: these strings are stored in Postgres and published in the API.
        let purposes: Vec<_> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            purposes,
            [
                "data_processing",
                "marketing_whatsapp",
                "marketing_email",
                "marketing_sms",
                "appointment_reminders",
                "treatment_updates",
                "third_party_sharing"
            ]
        );
        let channels: Vec<_> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(channels, ["web", "paper", "whatsapp", "sms", "email", "phone"]);
    }

    #[test]
    fn unknown_spellings_are_refused_with_the_field_and_the_choices() {
        let error = "Marketing_SMS".parse::<Purpose>().unwrap_err();
        assert_eq!(error.kind(), "consent_unknown_value");
        assert_eq!(error.field(), Some("purpose"));
        let message = error.to_string();
        assert!(message.contains("\"Marketing_SMS\""), "{message}");
        assert!(message.contains("marketing_sms"), "{message}");
        assert!(message.contains("third_party_sharing"), "{message}");

        assert!(matches!(" web".parse::<Channel>(), Err(ConsentError::UnknownValue { field: "channel", .. })));
        assert!(matches!("fax".parse::<Channel>(), Err(ConsentError::UnknownValue { field: "channel", .. })));
        assert!(serde_json::from_str::<Purpose>("\"newsletter\"").is_err());
        assert!(serde_json::from_str::<InboundChannel>("\"WhatsApp\"").is_err());
    }

    #[test]
    fn only_marketing_needs_data_processing() {
        for &purpose in Purpose::ALL {
            let expected: &[Purpose] = if purpose.is_marketing() { &[Purpose::DataProcessing] } else { &[] };
            assert_eq!(purpose.prerequisites(), expected, "{purpose}");
            assert!(!purpose.prerequisites().contains(&purpose), "{purpose} must not require itself");
        }
        let marketing: Vec<_> = Purpose::ALL.iter().filter(|p| p.is_marketing()).collect();
        assert_eq!(marketing, [&Purpose::MarketingWhatsapp, &Purpose::MarketingEmail, &Purpose::MarketingSms]);
    }

    #[test]
    fn stop_withdraws_the_marketing_purpose_of_its_own_channel() {
        assert_eq!(marketing_purpose_for_channel(InboundChannel::WhatsApp), Purpose::MarketingWhatsapp);
        assert_eq!(marketing_purpose_for_channel(InboundChannel::Sms), Purpose::MarketingSms);
        assert_eq!(marketing_purpose_for_channel(InboundChannel::Email), Purpose::MarketingEmail);
        for &channel in InboundChannel::ALL {
            assert!(marketing_purpose_for_channel(channel).is_marketing());
            assert_eq!(channel.evidence_channel().as_str(), channel.as_str());
        }
    }
}
