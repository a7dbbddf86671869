//! The one error type of the audit crate. No HTTP here: apps/api maps each variant to a status.

use thiserror::Error;

/// A boxed cause from an adapter (database driver, KMS client), kept as the error's `source()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the audit domain.
///
/// Messages never echo detail *values* (they might be personal data that a caller tried to log);
/// they name the offending key or field only.
#[derive(Debug, Error)]
pub enum AuditError {
    /// A stored or submitted action string is not in the closed set of [`crate::Action`]s.
    #[error("unknown audit action {0:?}")]
    UnknownAction(String),

    /// A stored or submitted outcome string is not `success`, `failure` or `denied`.
    #[error("unknown audit outcome {0:?}; expected success, failure or denied")]
    UnknownOutcome(String),

    /// A structural field (resource type, resource id, actor name, request id) is malformed.
    #[error("invalid audit {field}: {reason}")]
    InvalidField { field: &'static str, reason: &'static str },

    /// The actor acts for another practice than the event's tenant: refusing it keeps one
    /// practice's actions out of another practice's chain.
    #[error("the event's tenant does not match the actor's tenant")]
    TenantMismatch,

    /// The timestamp cannot be written in the canonical four-digit-year form.
    #[error("audit timestamp outside the supported range (years 1 to 9999, UTC)")]
    TimestampOutOfRange,

    /// The detail is not a JSON object.
    #[error("audit detail must be a JSON object")]
    DetailNotObject,

    /// The detail's canonical JSON is longer than [`crate::detail::MAX_DETAIL_BYTES`].
    #[error("audit detail is {size} bytes; the limit is {max}")]
    DetailTooLarge { size: usize, max: usize },

    /// The detail nests objects/arrays deeper than [`crate::detail::MAX_DETAIL_DEPTH`].
    #[error("audit detail nests deeper than {max} levels")]
    DetailTooDeep { max: usize },

    /// A detail key names personal data (phone, email, name, ...). Audit entries are kept for
    /// years and cannot be edited or crypto-shredded, so they must never hold PII.
    #[error("audit detail key {key:?} names personal data; audit entries must not carry PII")]
    DetailPiiKey { key: String },

    /// A detail value has a shape we refuse (float, over-long string, NUL character).
    #[error("audit detail value under key {key:?} is not allowed: {reason}")]
    DetailInvalidValue { key: String, reason: &'static str },

    /// The chain reached the largest sequence number Postgres `BIGINT` can hold.
    #[error("audit sequence number overflow")]
    SequenceOverflow,

    /// A page limit outside `1..=Page::MAX_LIMIT`.
    #[error("page limit {limit} is outside 1..={max}")]
    InvalidPageLimit { limit: u32, max: u32 },

    /// A filter whose `from` is not before its `to`.
    #[error("empty time range: `from` must be before `to`")]
    InvalidTimeRange,

    /// A checkpoint handed to a verifier belongs to another tenant's chain.
    #[error("the checkpoint belongs to another tenant's chain")]
    CheckpointTenantMismatch,

    /// A checkpoint must name an existing entry (sequence 1 or later).
    #[error("a checkpoint's sequence number must be at least 1")]
    InvalidCheckpoint,

    /// The checkpoint signer (KMS, HSM) failed; the cause is kept as `source()`.
    #[error("checkpoint signer failed")]
    Signer(#[source] BoxError),

    /// The audit log's storage failed; the cause is kept as `source()`.
    #[error("audit log storage failed")]
    Storage(#[source] BoxError),
}

/// At most this many characters of an unknown input are echoed in an error, so a huge or hostile
/// string from a request or a corrupted row cannot flood logs.
const ECHO_LIMIT: usize = 64;

pub(crate) fn echo(input: &str) -> String {
    input.chars().take(ECHO_LIMIT).collect()
}
