//! Shared fixtures: a patient, actors, evidence, and ways to bring a record into each state.

use consent::{Channel, ConsentCommand, ConsentRecord, ConsentState, ConsentText, Evidence, Purpose};
use kernel::{Actor, PatientId, Role, TenantId, UserId};
use std::sync::OnceLock;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// A fixed starting time; tests move from here in whole minutes.
pub const T0: OffsetDateTime = datetime!(2026-03-01 09:00 UTC);

pub fn minutes(n: i64) -> OffsetDateTime {
    T0 + Duration::minutes(n)
}

/// One receptionist for the whole test run, so evidence built twice compares equal.
pub fn receptionist() -> Actor {
    static RECEPTIONIST: OnceLock<Actor> = OnceLock::new();
    RECEPTIONIST
        .get_or_init(|| Actor::User { tenant: TenantId::new(), user: UserId::new(), role: Role::Receptionist })
        .clone()
}

pub fn text(version: &str) -> ConsentText {
    ConsentText::from_text(version, &format!("Consent text, version {version}.")).unwrap()
}

pub fn evidence(channel: Channel) -> Evidence {
    Evidence::new(text("v1"), channel, receptionist())
}

pub fn grant(expires_at: Option<OffsetDateTime>) -> ConsentCommand {
    ConsentCommand::Grant { expires_at }
}

/// Applies `steps` (command, minute) to a fresh record, panicking on any refusal.
pub fn record_after(purpose: Purpose, steps: &[(ConsentCommand, i64)]) -> ConsentRecord {
    record_for(PatientId::new(), purpose, steps)
}

pub fn record_for(patient: PatientId, purpose: Purpose, steps: &[(ConsentCommand, i64)]) -> ConsentRecord {
    let mut record = ConsentRecord::new(patient, purpose);
    for (command, minute) in steps {
        record.apply(*command, evidence(Channel::Web), minutes(*minute)).unwrap();
    }
    record
}

/// A record whose effective state at minute 10 is `state`, having got there by the shortest path
/// (an expired one through a grant that lapsed at minute 5).
pub fn record_in(state: ConsentState) -> ConsentRecord {
    use ConsentCommand::*;
    let purpose = Purpose::AppointmentReminders;
    let record = match state {
        ConsentState::None => record_after(purpose, &[]),
        ConsentState::Requested => record_after(purpose, &[(Request, 0)]),
        ConsentState::Granted => record_after(purpose, &[(grant(None), 0)]),
        ConsentState::Expired => record_after(purpose, &[(grant(Some(minutes(5))), 0)]),
        ConsentState::Withdrawn => record_after(purpose, &[(grant(None), 0), (Withdraw, 1)]),
        ConsentState::Archived => record_after(purpose, &[(Request, 0), (Archive, 1)]),
    };
    assert_eq!(record.effective_state(minutes(10)), state);
    record
}
