//! The audit event: who did what to which resource, when, and how it ended.

use crate::action::{Action, Outcome};
use crate::detail::validate_detail;
use crate::error::AuditError;
use crate::security::{FailedLoginPolicy, SuspicionSubject};
use kernel::{Actor, Clock, RequestId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use time::{OffsetDateTime, UtcOffset};

/// Longest resource type, in bytes.
pub const MAX_RESOURCE_TYPE_BYTES: usize = 64;
/// Longest resource id or actor name (API key id, component, provider), in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;

/// One thing that happened, before it is chained.
///
/// Fields are public so adapters can rebuild stored rows; nothing reaches the chain without
/// [`AuditEvent::validate`], which [`crate::next_entry`] calls. Build events with
/// [`AuditEvent::new`] and the `with_*` methods, or with the security constructors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The practice whose chain the entry belongs to.
    pub tenant: TenantId,
    pub actor: Actor,
    pub action: Action,
    /// What kind of thing was acted on: `[a-z][a-z0-9_]*`, e.g. `patient`, `consent`, `api_key`.
    pub resource_type: String,
    /// Which one: an id, never a name. `[A-Za-z0-9._:-]+`, so an email (`@`), a phone number
    /// (`+`) or a person's name (spaces) cannot be passed off as an id.
    pub resource_id: Option<String>,
    pub outcome: Outcome,
    pub request_id: Option<RequestId>,
    /// When it happened, in UTC; chained with microsecond precision (what `timestamptz` keeps).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// A small JSON object of non-personal facts; see [`crate::detail`].
    pub detail: Value,
}

impl AuditEvent {
    /// A successful event with no resource id, request id or detail, timed by `clock`.
    pub fn new(
        tenant: TenantId,
        actor: Actor,
        action: Action,
        resource_type: impl Into<String>,
        clock: &dyn Clock,
    ) -> Self {
        Self {
            tenant,
            actor,
            action,
            resource_type: resource_type.into(),
            resource_id: None,
            outcome: Outcome::Success,
            request_id: None,
            occurred_at: clock.now(),
            detail: Value::Object(Map::new()),
        }
    }

    pub fn with_resource_id(mut self, resource_id: impl Into<String>) -> Self {
        self.resource_id = Some(resource_id.into());
        self
    }

    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn with_request_id(mut self, request_id: RequestId) -> Self {
        self.request_id = Some(request_id);
        self
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    /// An authorisation check refused `actor` access to a resource. `reason` is a fixed code
    /// (`missing_role`, `no_consent`, `cross_tenant`), never a message built from input.
    pub fn access_denied(
        tenant: TenantId,
        actor: Actor,
        resource_type: impl Into<String>,
        resource_id: Option<String>,
        reason: &'static str,
        clock: &dyn Clock,
    ) -> Self {
        let mut event = Self::new(tenant, actor, Action::AccessDenied, resource_type, clock)
            .with_outcome(Outcome::Denied)
            .with_detail(json!({ "reason": reason }));
        event.resource_id = resource_id;
        event
    }

    /// A detector flagged `subject` (e.g. [`FailedLoginPolicy`] saw too many failed logins).
    ///
    /// The subject may be a source IP address: that is personal data under the GDPR (CJEU
    /// C-582/14, Breyer), stored as given because incident response needs it (blocking,
    /// reporting to the authority under Art. 33). It is covered by the audit log's retention
    /// period and must be named in the record of processing activities.
    pub fn suspicious_activity(
        tenant: TenantId,
        subject: SuspicionSubject,
        policy: &FailedLoginPolicy,
        failed_attempts: u64,
        clock: &dyn Clock,
    ) -> Self {
        let (resource_type, resource_id) = match subject {
            SuspicionSubject::Account(user) => ("user", user.to_string()),
            SuspicionSubject::SourceIp(ip) => ("source_ip", ip.to_string()),
        };
        let actor = Actor::System { component: "security".to_owned() };
        Self::new(tenant, actor, Action::SecuritySuspiciousActivity, resource_type, clock)
            .with_resource_id(resource_id)
            .with_detail(json!({
                "signal": "failed_logins",
                "failed_attempts": failed_attempts,
                "threshold": policy.threshold,
                "window_seconds": policy.window.whole_seconds(),
            }))
    }

    /// An inbound webhook for `provider` failed verification.
    ///
    /// The actor is `System { component: "webhook-verifier" }`, not `Actor::Webhook`: an
    /// unverified request has not proven it comes from the provider. `source_ip` is personal
    /// data (see [`AuditEvent::suspicious_activity`]); it is kept for incident response, because
    /// a stream of forged webhooks is an attack whose origin must be traceable.
    pub fn signature_failure(
        tenant: TenantId,
        provider: &str,
        reason: SignatureFailure,
        source_ip: Option<IpAddr>,
        clock: &dyn Clock,
    ) -> Self {
        let mut detail = Map::new();
        detail.insert("reason".to_owned(), Value::from(reason.as_str()));
        if let Some(ip) = source_ip {
            detail.insert("source_ip".to_owned(), Value::from(ip.to_string()));
        }
        let actor = Actor::System { component: "webhook-verifier".to_owned() };
        Self::new(tenant, actor, Action::WebhookRejected, "webhook_endpoint", clock)
            .with_resource_id(provider)
            .with_outcome(Outcome::Denied)
            .with_detail(Value::Object(detail))
    }

    /// Checks every rule an event must meet before it is chained: the actor acts for this
    /// tenant, names and ids are plain tokens, the timestamp is representable, the detail is
    /// small and free of PII keys.
    pub fn validate(&self) -> Result<(), AuditError> {
        match &self.actor {
            Actor::User { tenant, .. } if *tenant != self.tenant => {
                return Err(AuditError::TenantMismatch);
            }
            Actor::ApiKey { tenant, .. } if *tenant != self.tenant => {
                return Err(AuditError::TenantMismatch);
            }
            Actor::ApiKey { key_id: name, .. }
            | Actor::System { component: name }
            | Actor::Webhook { provider: name } => check_token("actor", name)?,
            Actor::User { .. } => {}
        }
        check_resource_type(&self.resource_type)?;
        if let Some(id) = &self.resource_id {
            check_token("resource id", id)?;
        }
        if let Some(request_id) = &self.request_id
            && RequestId::parse_inbound(request_id.as_str()).is_none()
        {
            return Err(AuditError::InvalidField {
                field: "request id",
                reason: "must be 1..=64 characters of [A-Za-z0-9._-]",
            });
        }
        let year = self.occurred_at.checked_to_offset(UtcOffset::UTC).map(OffsetDateTime::year);
        if !year.is_some_and(|year| (1..=9999).contains(&year)) {
            return Err(AuditError::TimestampOutOfRange);
        }
        validate_detail(&self.detail)
    }

    /// The event as it is chained: time in UTC, truncated to whole microseconds, so the hash
    /// computed before the insert matches the one recomputed from the stored `timestamptz`.
    pub(crate) fn normalized(mut self) -> Result<Self, AuditError> {
        self.occurred_at = truncate_to_micros(self.occurred_at)?;
        Ok(self)
    }
}

/// `t` in UTC with its sub-microsecond part dropped.
pub fn truncate_to_micros(t: OffsetDateTime) -> Result<OffsetDateTime, AuditError> {
    let utc = t.checked_to_offset(UtcOffset::UTC).ok_or(AuditError::TimestampOutOfRange)?;
    utc.replace_nanosecond(utc.nanosecond() / 1_000 * 1_000).map_err(|_| AuditError::TimestampOutOfRange)
}

fn check_resource_type(value: &str) -> Result<(), AuditError> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_RESOURCE_TYPE_BYTES
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AuditError::InvalidField {
            field: "resource type",
            reason: "must be 1..=64 characters of [a-z0-9_], starting with a letter",
        })
    }
}

fn check_token(field: &'static str, value: &str) -> Result<(), AuditError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_TOKEN_BYTES
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AuditError::InvalidField { field, reason: "must be 1..=128 characters of [A-Za-z0-9._:-]" })
    }
}

/// Why a webhook failed verification: a closed set, so no attacker-controlled text is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureFailure {
    MissingSignature,
    InvalidSignature,
    /// The signed timestamp is outside the replay window.
    StaleTimestamp,
    /// The signature names a key/secret version we do not hold.
    UnknownKey,
    MalformedHeader,
}

impl SignatureFailure {
    pub const fn as_str(self) -> &'static str {
        match self {
            SignatureFailure::MissingSignature => "missing_signature",
            SignatureFailure::InvalidSignature => "invalid_signature",
            SignatureFailure::StaleTimestamp => "stale_timestamp",
            SignatureFailure::UnknownKey => "unknown_key",
            SignatureFailure::MalformedHeader => "malformed_header",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::{FixedClock, Role, UserId};
    use time::macros::datetime;

    fn clock() -> FixedClock {
        FixedClock::at(datetime!(2026-03-01 12:00:00.123456789 +01:00))
    }

    fn user(tenant: TenantId) -> Actor {
        Actor::User { tenant, user: UserId::new(), role: Role::Therapist }
    }

    #[test]
    fn a_plain_event_validates() {
        let tenant = TenantId::new();
        let event = AuditEvent::new(tenant, user(tenant), Action::PatientRead, "patient", &clock())
            .with_resource_id("0190f0a4-1b2c-7d3e-8f40-123456789abc")
            .with_request_id(RequestId::generate())
            .with_detail(json!({ "fields": ["diagnosis_code"] }));
        // "diagnosis_code" is a *value* here, not a key: fine.
        event.validate().unwrap();
    }

    #[test]
    fn actor_of_another_tenant_is_refused() {
        let tenant = TenantId::new();
        let event = AuditEvent::new(tenant, user(TenantId::new()), Action::PatientRead, "patient", &clock());
        assert!(matches!(event.validate(), Err(AuditError::TenantMismatch)));
        let api = Actor::ApiKey { tenant: TenantId::new(), key_id: "k1".into() };
        let event = AuditEvent::new(tenant, api, Action::PatientRead, "patient", &clock());
        assert!(matches!(event.validate(), Err(AuditError::TenantMismatch)));
    }

    #[test]
    fn ids_that_look_like_contact_details_are_refused() {
        let tenant = TenantId::new();
        for bad in ["jane@example.org", "+4915112345678", "Jane Doe", "", &"a".repeat(129)] {
            let event =
                AuditEvent::new(tenant, user(tenant), Action::PatientRead, "patient", &clock()).with_resource_id(bad);
            assert!(matches!(event.validate(), Err(AuditError::InvalidField { field: "resource id", .. })), "{bad}");
        }
        for bad in ["Patient", "", "patient record", "1patient", "patient.read"] {
            let event = AuditEvent::new(tenant, user(tenant), Action::PatientRead, bad, &clock());
            assert!(matches!(event.validate(), Err(AuditError::InvalidField { field: "resource type", .. })), "{bad}");
        }
        let system = Actor::System { component: "cron job".into() };
        let event = AuditEvent::new(tenant, system, Action::ConsentExpired, "consent", &clock());
        assert!(matches!(event.validate(), Err(AuditError::InvalidField { field: "actor", .. })));
    }

    #[test]
    fn pii_in_detail_is_refused() {
        let tenant = TenantId::new();
        let event = AuditEvent::new(tenant, user(tenant), Action::PatientUpdate, "patient", &clock())
            .with_detail(json!({ "changed": { "phone_number": "+49..." } }));
        assert!(matches!(event.validate(), Err(AuditError::DetailPiiKey { .. })));
    }

    #[test]
    fn time_is_normalised_to_utc_microseconds() {
        let tenant = TenantId::new();
        let event = AuditEvent::new(tenant, user(tenant), Action::AuthLogin, "session", &clock()).normalized().unwrap();
        assert_eq!(event.occurred_at, datetime!(2026-03-01 11:00:00.123456 UTC));
        assert_eq!(event.occurred_at.offset(), UtcOffset::UTC);
    }

    #[test]
    fn timestamps_beyond_year_9999_are_refused() {
        let tenant = TenantId::new();
        let mut event = AuditEvent::new(tenant, user(tenant), Action::AuthLogin, "session", &clock());
        event.occurred_at = datetime!(9999-12-31 23:30 -01:00);
        assert!(matches!(event.validate(), Err(AuditError::TimestampOutOfRange)));
    }

    #[test]
    fn security_constructors_produce_valid_events() {
        let tenant = TenantId::new();
        let clock = clock();
        let denied = AuditEvent::access_denied(tenant, user(tenant), "patient", None, "missing_role", &clock);
        denied.validate().unwrap();
        assert_eq!((denied.action, denied.outcome), (Action::AccessDenied, Outcome::Denied));

        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let rejected =
            AuditEvent::signature_failure(tenant, "stripe", SignatureFailure::InvalidSignature, Some(ip), &clock);
        rejected.validate().unwrap();
        assert_eq!(rejected.detail, json!({ "reason": "invalid_signature", "source_ip": "2001:db8::1" }));
        assert_eq!(rejected.outcome, Outcome::Denied);

        let policy = FailedLoginPolicy::default();
        let flagged = AuditEvent::suspicious_activity(
            tenant,
            SuspicionSubject::SourceIp("203.0.113.9".parse().unwrap()),
            &policy,
            11,
            &clock,
        );
        flagged.validate().unwrap();
        assert_eq!(flagged.resource_id.as_deref(), Some("203.0.113.9"));
        assert_eq!(flagged.detail["window_seconds"], 300);
    }
}
