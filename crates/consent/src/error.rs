//! The one error type of the consent crate. No HTTP here: apps/api maps each [`ConsentError::kind`]
//! to a status and an RFC 9457 problem type (an illegal transition is a 409 that lists the allowed
//! actions; invalid input is a 422 naming [`ConsentError::field`]).

use crate::closed_set::echo;
pub use crate::closed_set::{ECHO_LIMIT, UnknownValue};
use crate::lifecycle::{ConsentAction, ConsentState};
use thiserror::Error;
use time::OffsetDateTime;

/// Everything that can go wrong in the consent domain.
///
/// Messages echo at most [`ECHO_LIMIT`] characters of an unknown input and never the consent
/// text itself, so a hostile or huge value cannot flood a log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConsentError {
    /// A string is not a member of one of the closed sets (purpose, channel, action, state,
    /// inbound channel).
    #[error("unknown {field} {value:?}; expected one of {expected}")]
    UnknownValue { field: &'static str, value: String, expected: String },

    /// A piece of evidence (text version, text digest, note reference, consent text) is malformed.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: &'static str },

    /// Both the consent text and a digest were given, and the digest is not the text's SHA-256:
    /// the caller hashed another text than the one it sent, so neither can be trusted.
    #[error("text_sha256 does not match the SHA-256 of the consent text")]
    DigestMismatch,

    /// The action is not allowed from the consent's effective state. `allowed` is what *is*
    /// allowed from there (possibly empty), so a client can tell the user what to do instead.
    #[error("cannot {action} a consent that is {from}")]
    IllegalTransition { from: ConsentState, action: ConsentAction, allowed: Vec<ConsentAction> },

    /// A grant's expiry is not strictly after the grant itself: such a grant would be expired
    /// before it was ever in force.
    #[error("expires_at ({expires_at}) must be after the time of the grant ({granted_at})")]
    ExpiryNotAfterGrant { granted_at: OffsetDateTime, expires_at: OffsetDateTime },

    /// A change is dated before the consent's previous change. History is kept in time order, so
    /// a clock that went backwards (or a replica whose clock lags) is refused, not papered over.
    #[error("change at {at} is dated before the previous change at {previous}")]
    TimeBeforeLastChange { previous: OffsetDateTime, at: OffsetDateTime },

    /// A timestamp cannot be represented in UTC (far outside years 1..=9999).
    #[error("{field} is outside the supported time range")]
    TimestampOutOfRange { field: &'static str },

    /// A stored history does not fold into a record: an event of another patient or purpose, a
    /// gap or repeat in the sequence numbers, a stored state that is not what the state machine
    /// yields, or an action that was illegal at its time. Points at a corrupted or tampered table.
    #[error("consent history is inconsistent at event {seq}: {reason}")]
    InconsistentHistory { seq: u64, reason: &'static str },

    /// A stored current-state row contradicts itself (e.g. `granted` without a grant time).
    #[error("consent record is inconsistent: {reason}")]
    InconsistentRecord { reason: &'static str },
}

impl ConsentError {
    /// A stable, machine-readable slug for the problem type. Never changes once published.
    pub const fn kind(&self) -> &'static str {
        match self {
            ConsentError::UnknownValue { .. } => "consent_unknown_value",
            ConsentError::InvalidField { .. } => "consent_invalid_field",
            ConsentError::DigestMismatch => "consent_digest_mismatch",
            ConsentError::IllegalTransition { .. } => "consent_illegal_transition",
            ConsentError::ExpiryNotAfterGrant { .. } => "consent_expiry_not_after_grant",
            ConsentError::TimeBeforeLastChange { .. } => "consent_time_before_last_change",
            ConsentError::TimestampOutOfRange { .. } => "consent_timestamp_out_of_range",
            ConsentError::InconsistentHistory { .. } => "consent_inconsistent_history",
            ConsentError::InconsistentRecord { .. } => "consent_inconsistent_record",
        }
    }

    /// The request field the problem is about, where there is one (for a problem body's
    /// `errors[].field` / JSON pointer).
    pub const fn field(&self) -> Option<&'static str> {
        match self {
            ConsentError::UnknownValue { field, .. }
            | ConsentError::InvalidField { field, .. }
            | ConsentError::TimestampOutOfRange { field } => Some(field),
            ConsentError::DigestMismatch => Some("text_sha256"),
            ConsentError::IllegalTransition { .. } => Some("action"),
            ConsentError::ExpiryNotAfterGrant { .. } => Some("expires_at"),
            ConsentError::TimeBeforeLastChange { .. }
            | ConsentError::InconsistentHistory { .. }
            | ConsentError::InconsistentRecord { .. } => None,
        }
    }

    /// True for errors that describe stored data rather than the caller's input: the API should
    /// answer 500 (and log) for these, not blame the client.
    pub const fn is_storage_corruption(&self) -> bool {
        matches!(self, ConsentError::InconsistentHistory { .. } | ConsentError::InconsistentRecord { .. })
    }
}

impl ConsentError {
    /// `input` is not a member of the closed set `field` (whose members are `expected`); echoes at
    /// most [`ECHO_LIMIT`] characters of it. What `closed_set!`'s `FromStr` returns.
    pub(crate) fn unknown_value(field: &'static str, input: &str, expected: String) -> Self {
        ConsentError::UnknownValue { field, value: echo(input), expected }
    }
}

impl From<UnknownValue> for ConsentError {
    fn from(UnknownValue { field, value, expected }: UnknownValue) -> Self {
        ConsentError::UnknownValue { field, value, expected }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn one_of_each() -> Vec<ConsentError> {
        let t = time::macros::datetime!(2026-01-01 00:00 UTC);
        vec![
            ConsentError::UnknownValue { field: "purpose", value: "x".into(), expected: "a, b".into() },
            ConsentError::InvalidField { field: "note_ref", reason: "r" },
            ConsentError::DigestMismatch,
            ConsentError::IllegalTransition {
                from: ConsentState::Withdrawn,
                action: ConsentAction::Withdraw,
                allowed: vec![],
            },
            ConsentError::ExpiryNotAfterGrant { granted_at: t, expires_at: t },
            ConsentError::TimeBeforeLastChange { previous: t, at: t },
            ConsentError::TimestampOutOfRange { field: "now" },
            ConsentError::InconsistentHistory { seq: 1, reason: "r" },
            ConsentError::InconsistentRecord { reason: "r" },
        ]
    }

    #[test]
    fn kinds_are_distinct_prefixed_slugs() {
        let errors = one_of_each();
        let kinds: HashSet<_> = errors.iter().map(ConsentError::kind).collect();
        assert_eq!(kinds.len(), errors.len());
        for kind in kinds {
            assert!(kind.starts_with("consent_"), "{kind}");
            assert!(kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{kind}");
        }
    }

    #[test]
    fn only_stored_data_problems_are_corruption() {
        let corrupt: Vec<_> =
            one_of_each().into_iter().filter(ConsentError::is_storage_corruption).map(|e| e.kind()).collect();
        assert_eq!(corrupt, ["consent_inconsistent_history", "consent_inconsistent_record"]);
    }

    #[test]
    fn illegal_transition_names_the_action_field_and_reads_well() {
        let error = ConsentError::IllegalTransition {
            from: ConsentState::Expired,
            action: ConsentAction::Withdraw,
            allowed: vec![ConsentAction::Request],
        };
        assert_eq!(error.field(), Some("action"));
        assert_eq!(error.to_string(), "cannot withdraw a consent that is expired");
    }

    #[test]
    fn echo_is_bounded() {
        assert_eq!(echo(&"é".repeat(1000)).chars().count(), ECHO_LIMIT);
    }
}
