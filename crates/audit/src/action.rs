//! The closed sets an audit entry is described with: what was done ([`Action`]) and how it ended
//! ([`Outcome`]).
//!
//! Closed, because an auditor (or a regulator) must be able to list every kind of entry the system
//! can write and query them reliably; a free-text action drifts ("patient.view", "view_patient",
//! "PatientRead") and invites free text, which invites personal data.

use crate::error::{AuditError, echo};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Declares a closed string enum: the variants, their one spelling, `ALL`, `as_str`, `FromStr`,
/// `Display` and serde as that spelling. One list, so the spellings cannot drift apart.
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        pub enum $name:ident (unknown: $unknown:ident) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every member, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The one stored and serialised spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl FromStr for $name {
            type Err = AuditError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(AuditError::$unknown(echo(s))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_set! {
    /// What was done. Stored and hashed as the dotted spelling (`patient.read`).
    pub enum Action (unknown: UnknownAction) {
        /// A patient record (or part of it) was decrypted and shown.
        PatientRead => "patient.read",
        PatientCreate => "patient.create",
        PatientUpdate => "patient.update",
        /// A GDPR Art. 15/20 export was produced.
        PatientExport => "patient.export",
        /// A GDPR Art. 17 erasure (crypto-shredding) was carried out.
        PatientErase => "patient.erase",
        /// A legal hold was set on or lifted from a patient record (erasure is refused while set).
        PatientLegalHold => "patient.legal_hold",
        ConsentRequested => "consent.requested",
        ConsentGranted => "consent.granted",
        ConsentWithdrawn => "consent.withdrawn",
        ConsentExpired => "consent.expired",
        ConsentArchived => "consent.archived",
        AppointmentCreate => "appointment.create",
        AppointmentUpdate => "appointment.update",
        AppointmentCancel => "appointment.cancel",
        /// Working hours or absences of a therapist were set or removed.
        CalendarUpdate => "calendar.update",
        AuthLogin => "auth.login",
        AuthLoginFailed => "auth.login_failed",
        AuthLogout => "auth.logout",
        AuthSessionRevoked => "auth.session_revoked",
        /// An authorisation check refused a request.
        AccessDenied => "access.denied",
        ApiKeyCreate => "apikey.create",
        ApiKeyRevoke => "apikey.revoke",
        PracticeCreate => "practice.create",
        UserCreate => "user.create",
        UserDisable => "user.disable",
        WebhookReceived => "webhook.received",
        /// An inbound webhook failed verification (signature, timestamp, format).
        WebhookRejected => "webhook.rejected",
        KeyGenerate => "key.generate",
        KeyWrap => "key.wrap",
        KeyUnwrap => "key.unwrap",
        KeyRotate => "key.rotate",
        KeyDestroy => "key.destroy",
        /// A detector (e.g. [`crate::FailedLoginPolicy`]) saw a pattern worth an investigation.
        SecuritySuspiciousActivity => "security.suspicious_activity",
        /// The chain was verified (the result is in the detail).
        AuditVerified => "audit.verified",
        /// Entries past their retention period were purged (behind a checkpoint).
        AuditRetentionPurge => "audit.retention_purge",
    }
}

closed_set! {
    /// How the action ended.
    pub enum Outcome (unknown: UnknownOutcome) {
        /// It happened.
        Success => "success",
        /// It was attempted and failed (bad password, provider error, invalid input).
        Failure => "failure",
        /// An authorisation rule refused it.
        Denied => "denied",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_action_round_trips_through_its_spelling() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>().unwrap(), *action);
            let json = serde_json::to_string(action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.as_str()));
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), *action);
        }
        let spellings: HashSet<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(spellings.len(), Action::ALL.len(), "two actions share a spelling");
        assert_eq!(Action::ALL.len(), 35);
    }

    #[test]
    fn action_spellings_are_lowercase_dotted_tokens() {
        for action in Action::ALL {
            let s = action.as_str();
            assert_eq!(s.matches('.').count(), 1, "{s}");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'), "{s}");
        }
    }

    #[test]
    fn unknown_spellings_are_rejected() {
        assert!(matches!("patient.view".parse::<Action>(), Err(AuditError::UnknownAction(_))));
        assert!("Patient.Read".parse::<Action>().is_err());
        assert!(serde_json::from_str::<Action>("\"patient.delete\"").is_err());
        assert!(matches!("ok".parse::<Outcome>(), Err(AuditError::UnknownOutcome(_))));
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>().unwrap(), *outcome);
        }
    }
}
