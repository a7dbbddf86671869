//! Schemas and names the handlers' `#[utoipa::path]` annotations share: the security scheme
//! names, the common problem responses, and mirrors of types owned elsewhere. The document
//! itself is assembled in `crate::openapi_document`.
//!
//! The schemas at the end of this file describe types owned by other crates or modules (the
//! problem document of `error.rs`, kernel roles and actors, audit chain breaks) for the document
//! only; tests check they match what those types serialize.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// Security scheme names, as referenced by the handlers' `security(...)`.
pub const SESSION_COOKIE_SCHEME: &str = "session_cookie";
pub const CSRF_SCHEME: &str = "csrf_token";
pub const BEARER_SCHEME: &str = "bearer";
pub const API_KEY_SCHEME: &str = "api_key";

/// The problem responses every authenticated operation can give, listed once.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CommonProblems {
    /// No or invalid credentials.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role or key scope does not allow this (audited as `access.denied`), or a failed CSRF check.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// Rate limit hit; see `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// A backing service (database, Redis, KMS) is unavailable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

// ---------------------------------------------------------------------------------------------
// Closed sets: string enums listing exactly what the server accepts or answers, built from the
// owning crate's own list (`ALL`, `as_str`), so the document cannot drift from the code.

/// A string schema whose `enum` is `values`, in the order given.
fn string_enum(description: &str, values: impl IntoIterator<Item = String>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values.into_iter().collect::<Vec<_>>()))
        .into()
}

/// Declares a named schema (a component, referenced by `value_type = crate::openapi::Name`)
/// that is the string enum of `$values` (an iterator of `&str` or `String`).
macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident, $description:literal, $values:expr) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_enum($description, $values.into_iter().map(|value| value.to_string()))
            }
        }

        impl ToSchema for $name {}
    };
}

closed_set!(
    /// `scheduling::AppointmentKind`.
    AppointmentKind,
    "The kind of an appointment.",
    scheduling::AppointmentKind::ALL.iter().map(|kind| kind.as_str())
);

closed_set!(
    /// `scheduling::AppointmentStatus`.
    AppointmentStatus,
    "Where an appointment stands: `scheduled -> confirmed -> completed | cancelled | no_show`.",
    scheduling::AppointmentStatus::ALL.iter().map(|status| status.as_str())
);

closed_set!(
    /// What `POST /api/v1/appointments/{id}/status` accepts: every status but `cancelled`
    /// (which needs `/cancel` and a reason; the server refuses it with 400).
    StatusChange,
    "The status to move to (`cancelled` goes through `/cancel` with a reason). Patients may only confirm; \
     a change that is not an edge of the state machine answers 409 `illegal-transition`.",
    scheduling::AppointmentStatus::ALL
        .iter()
        .filter(|status| **status != scheduling::AppointmentStatus::Cancelled)
        .map(|status| status.as_str())
);

closed_set!(
    /// `scheduling::PaymentState`.
    PaymentState,
    "Set only by verified Stripe events.",
    scheduling::PaymentState::ALL.iter().map(|state| state.as_str())
);

closed_set!(
    /// The reasons a caller may give (`patient_erased` is set by erasure only: refused with 400).
    CancelReason,
    "Why the appointment is cancelled.",
    app::appointments::CancelReason::ALL
        .into_iter()
        .filter(|reason| *reason != app::appointments::CancelReason::PatientErased)
        .map(|reason| reason.as_str())
);

closed_set!(
    /// Every recorded reason, `patient_erased` included.
    CancellationReason,
    "Why the appointment was cancelled; `patient_erased` when the patient's erasure cancelled it.",
    app::appointments::CancelReason::ALL.into_iter().map(|reason| reason.as_str())
);

closed_set!(
    /// `app::appointments::ReminderStatus`.
    ReminderStatus,
    "What became of a planned reminder.",
    app::appointments::ReminderStatus::ALL.into_iter().map(|status| status.as_str())
);

closed_set!(
    /// `scheduling::ReminderSkipReason`.
    ReminderSkipReason,
    "Why a reminder was skipped.",
    scheduling::ReminderSkipReason::ALL.iter().map(|reason| reason.as_str())
);

closed_set!(
    /// `scheduling::ReminderChannel`.
    ReminderChannel,
    "The channel a reminder goes out on.",
    scheduling::ReminderChannel::ALL.iter().map(|channel| channel.as_str())
);

closed_set!(
    /// `consent::Purpose`.
    ConsentPurpose,
    "What the patient consents to.",
    consent::Purpose::ALL.iter().map(|purpose| purpose.as_str())
);

closed_set!(
    /// `consent::ConsentAction`.
    ConsentAction,
    "A change of consent (expiry is not one: it happens by time).",
    consent::ConsentAction::ALL.iter().map(|action| action.as_str())
);

closed_set!(
    /// `consent::ConsentState`.
    ConsentState,
    "Where a consent stands; `expired` is only ever effective (a grant past its expiry).",
    consent::ConsentState::ALL.iter().map(|state| state.as_str())
);

closed_set!(
    /// `consent::Channel`.
    EvidenceChannel,
    "How the consent's evidence was collected.",
    consent::Channel::ALL.iter().map(|channel| channel.as_str())
);

closed_set!(
    /// The weekday names of working hours (`app::calendar::weekday_name`).
    Weekday,
    "A weekday, in lower-case English.",
    app::calendar::WEEK.into_iter().map(app::calendar::weekday_name)
);

closed_set!(
    /// Every IANA time zone name of the database bundled into the server. An enum although the
    /// list is long (about 600 names): clients and fuzzers then send only names the server
    /// accepts, a typo fails in the client, and the list comes from the very database the
    /// server looks names up in. The server also accepts them in any ASCII case and answers the
    /// spelling listed here.
    TimeZone,
    "An IANA time zone name, e.g. `Europe/Berlin` (any ASCII case is accepted; answers use this spelling).",
    scheduling::time_zone_names()
);

closed_set!(
    /// The roles `POST /api/v1/users` accepts: every role but `patient`.
    StaffRole,
    "A staff role. Patient accounts are created from the patient record (`POST /api/v1/patients/{id}/account`).",
    kernel::Role::ALL.into_iter().filter(|role| *role != kernel::Role::Patient).map(|role| role.as_str())
);

closed_set!(
    /// `audit::Action`.
    AuditAction,
    "What an audit entry records.",
    audit::Action::ALL.iter().map(|action| action.as_str())
);

closed_set!(
    /// `audit::Outcome`.
    AuditOutcome,
    "How the recorded action ended.",
    audit::Outcome::ALL.iter().map(|outcome| outcome.as_str())
);

// ---------------------------------------------------------------------------------------------
// Schemas of types owned elsewhere (documentation mirrors).

/// RFC 9457 problem details (`application/problem+json`), as rendered by `error.rs`. `type` is
/// stable (`urn:praxis:problem:<slug>` or `about:blank`); see docs/api-errors.md. Some problems
/// add members of their own (readiness adds `checks` and `failing`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(example = "urn:praxis:problem:not-found")]
    pub problem_type: String,
    #[schema(example = "No such resource")]
    pub title: String,
    #[schema(example = 404)]
    pub status: u16,
    /// Present when it helps the client; never says anything internal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request's `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field-level problems, for `urn:praxis:problem:validation-failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// A field-level validation failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "must be an email address of at most 254 characters")]
    pub message: String,
}

/// A user's role within one practice (`kernel::Role`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Therapist,
    Receptionist,
    Patient,
}

/// Who performed an action (`kernel::Actor`), tagged by `kind`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user acting within a practice.
    User { tenant: uuid::Uuid, user: uuid::Uuid, role: Role },
    /// A service calling with an API key (the key's id, never the key).
    ApiKey { tenant: uuid::Uuid, key_id: String },
    /// Praxis itself: migrations, scheduled jobs, operator CLI commands.
    System { component: String },
    /// A verified inbound webhook from a provider.
    Webhook { provider: String },
}

/// A scope an API key may hold (`identity::ApiScope`).
#[derive(Debug, Serialize, ToSchema)]
pub enum ApiScope {
    #[serde(rename = "patients:read")]
    PatientsRead,
    #[serde(rename = "patients:write")]
    PatientsWrite,
    #[serde(rename = "consents:read")]
    ConsentsRead,
    #[serde(rename = "consents:write")]
    ConsentsWrite,
    #[serde(rename = "appointments:read")]
    AppointmentsRead,
    #[serde(rename = "appointments:write")]
    AppointmentsWrite,
    #[serde(rename = "audit:read")]
    AuditRead,
}

/// The first place an audit chain is broken (`audit::Break`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainBreak {
    /// The first affected sequence number (for a gap the first missing one; for a truncated tail
    /// the first one after the end of the chain).
    pub seq: u64,
    pub kind: ChainBreakKind,
}

/// How the chain is broken; the numbers present depend on `kind`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainBreakKind {
    pub kind: ChainBreakName,
    /// `sequence_gap`, `out_of_order`: the seq expected next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// `sequence_gap`, `out_of_order`: the seq found instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<u64>,
    /// `checkpoint_mismatch`, `truncated_tail`, `checkpoint_signature_invalid`,
    /// `checkpoint_unsigned`: the checkpoint's seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<u64>,
    /// `truncated_tail`: the last seq of the chain (0 when empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// The kinds of chain break (`audit::BreakKind`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChainBreakName {
    HashMismatch,
    PrevHashMismatch,
    SequenceGap,
    OutOfOrder,
    ForeignTenant,
    CheckpointMismatch,
    TruncatedTail,
    /// A stored checkpoint's signature does not verify with the practice's KMS-held key.
    CheckpointSignatureInvalid,
    /// A checkpoint taken after the practice's checkpoints began to be signed has no signature.
    CheckpointUnsigned,
}

/// `GET /health/live`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "live")]
    pub status: String,
}

/// `GET /health/ready` when every dependency answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: String,
    /// One entry per dependency (`postgres`, `redis`, `kms`) and `rate_limiter`.
    pub checks: std::collections::BTreeMap<String, DependencyCheck>,
}

/// The state of one dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyCheck {
    /// `up` or `down`; for `rate_limiter`, `redis` or `degraded (in-process fallback)`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn role_mirror_matches_kernel() {
        let mirror = [Role::Admin, Role::Therapist, Role::Receptionist, Role::Patient];
        for (role, mirror) in kernel::Role::ALL.into_iter().zip(mirror) {
            assert_eq!(serde_json::to_value(role).unwrap(), serde_json::to_value(mirror).unwrap());
        }
    }

    #[test]
    fn api_scope_mirror_matches_identity() {
        use ApiScope as M;
        let mirror = [
            M::PatientsRead,
            M::PatientsWrite,
            M::ConsentsRead,
            M::ConsentsWrite,
            M::AppointmentsRead,
            M::AppointmentsWrite,
            M::AuditRead,
        ];
        assert_eq!(identity::ApiScope::ALL.len(), mirror.len());
        for (scope, mirror) in identity::ApiScope::ALL.into_iter().zip(mirror) {
            assert_eq!(serde_json::to_value(scope).unwrap(), serde_json::to_value(mirror).unwrap());
        }
    }

    #[test]
    fn actor_mirror_matches_kernel() {
        let tenant = kernel::TenantId::new();
        let user = kernel::UserId::new();
        let real = kernel::Actor::User { tenant, user, role: kernel::Role::Admin };
        let mirror = Actor::User { tenant: *tenant.as_uuid(), user: *user.as_uuid(), role: Role::Admin };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
    }

    #[test]
    fn problem_mirror_matches_error_rs() {
        let real = crate::ApiError::Validation {
            errors: vec![crate::error::FieldError { field: "f".into(), message: "m".into() }],
        }
        .problem();
        let mirror = Problem {
            problem_type: real.problem_type.clone(),
            title: real.title.clone(),
            status: real.status,
            detail: None,
            request_id: None,
            errors: Some(vec![FieldError { field: "f".into(), message: "m".into() }]),
        };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
    }

    #[test]
    fn break_mirror_matches_audit() {
        let real = audit::Break { seq: 7, kind: audit::BreakKind::SequenceGap { expected: 7, found: 9 } };
        let mirror = ChainBreak {
            seq: 7,
            kind: ChainBreakKind {
                kind: ChainBreakName::SequenceGap,
                expected: Some(7),
                found: Some(9),
                checkpoint_seq: None,
                last_seq: None,
            },
        };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
        let real = audit::Break { seq: 4, kind: audit::BreakKind::CheckpointSignatureInvalid { checkpoint_seq: 4 } };
        let mirror = ChainBreak {
            seq: 4,
            kind: ChainBreakKind {
                kind: ChainBreakName::CheckpointSignatureInvalid,
                expected: None,
                found: None,
                checkpoint_seq: Some(4),
                last_seq: None,
            },
        };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
    }
}
