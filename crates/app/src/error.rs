//! The one error type of the use cases. It says what went wrong in the caller's terms (a field
//! was invalid, a record is not there, a dependency is down); each door turns it into its own
//! answer in one place (the API: `apps/api/src/error.rs`; the CLI: a message and exit status 1).

use store_postgres::{AuditStoreError, StoreError};

/// One invalid input field and what is wrong with it (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input the caller sent is invalid; every problem found, each naming its field.
    #[error("invalid input: {}", describe(.0))]
    Invalid(Vec<FieldProblem>),
    /// The credentials were not accepted: one answer for every reason (an unknown practice,
    /// account, session or key, a wrong password, a disabled account, an ended session), so the
    /// answer does not tell which accounts exist.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The caller may not do this (already recorded as `access.denied` where it was asked).
    #[error("forbidden")]
    Forbidden,
    /// No such record, or not one the caller may see (the two are not told apart).
    #[error("not found")]
    NotFound,
    /// The record was erased.
    #[error("gone")]
    Gone,
    /// Erasure refused: the record is under a legal hold, which an admin must lift first.
    #[error("under a legal hold")]
    LegalHold,
    /// The change conflicts with the current state (a duplicate, a concurrent change).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A state machine refused the change; `allowed` lists what may be done instead.
    #[error("illegal transition: {detail}")]
    IllegalTransition { detail: String, allowed: Vec<String> },
    /// Too many attempts (failed logins); the same call may succeed after `retry_after_secs`.
    #[error("rate limited: retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    /// The therapist's calendar refuses the slot (working hours, an absence, another booking):
    /// `reason` for machines (`no_working_hours`, `outside_working_hours`, `therapist_absent`,
    /// `slot_taken`), and the conflicting slot only when the caller may know it.
    #[error("slot unavailable: {reason}")]
    SlotUnavailable { reason: &'static str, detail: String, conflicting_slot: Option<scheduling::Slot> },
    /// A dependency (database, KMS) cannot answer now; the same call may succeed later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure: the cause is for the log, never for the caller.
    #[error("internal error: {0:#}")]
    Internal(#[source] anyhow::Error),
}

fn describe(problems: &[FieldProblem]) -> String {
    problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// One invalid field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldProblem { field: field.into(), message: message.into() }])
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Error::Internal(cause.into())
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %error, "database unavailable");
                Error::Unavailable("A backing service is unavailable; try again shortly.".into())
            }
            StoreError::Contention(_) => {
                tracing::warn!(error = %error, "transaction lost a race with a concurrent one");
                Error::Unavailable(
                    "The request collided with a concurrent change and was undone whole; try again.".into(),
                )
            }
            other => Error::internal(other),
        }
    }
}

impl From<AuditStoreError> for Error {
    fn from(error: AuditStoreError) -> Self {
        match error {
            AuditStoreError::Store(store) => store.into(),
            // The checkpoint signer's KMS (or its key store) is down: verification cannot answer
            // now, and must not guess.
            AuditStoreError::Audit(audit::AuditError::Signer(cause))
                if cause
                    .downcast_ref::<crate::checkpoint_signer::SignerError>()
                    .is_some_and(crate::checkpoint_signer::SignerError::is_retryable) =>
            {
                tracing::warn!(error = %cause, "checkpoint signer unavailable");
                Error::Unavailable("A backing service is unavailable; try again shortly.".into())
            }
            // A refused purge or checkpoint (e.g. `before_seq` out of range) is the caller's input.
            AuditStoreError::InvalidPurge(message) => Error::invalid("before_seq", message),
            other => Error::internal(other),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        StoreError::classify(error).into()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
