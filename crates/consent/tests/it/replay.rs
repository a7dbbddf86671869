//! History: replay gives the record, corrupt history is refused, rows round-trip.

use crate::support::*;
use consent::{
    Channel, ConsentAction, ConsentCommand, ConsentError, ConsentEvent, ConsentEventParts, ConsentRecord,
    ConsentRecordParts, ConsentState, Purpose,
};
use kernel::PatientId;
use time::Duration;

const PURPOSE: Purpose = Purpose::MarketingSms;

/// request, grant (expiring at 50), renewal, expiry passes, archive, request again.
fn history() -> (ConsentRecord, Vec<ConsentEvent>) {
    let mut record = ConsentRecord::new(PatientId::new(), PURPOSE);
    let events = [
        (ConsentCommand::Request, 0),
        (grant(Some(minutes(30))), 10),
        (grant(Some(minutes(50))), 20),
        (ConsentCommand::Archive, 60),
        (ConsentCommand::Request, 70),
    ]
    .into_iter()
    .map(|(command, minute)| record.apply(command, evidence(Channel::Sms), minutes(minute)).unwrap())
    .collect();
    (record, events)
}

fn replay(record: &ConsentRecord, events: &[ConsentEvent]) -> Result<ConsentRecord, ConsentError> {
    ConsentRecord::replay(record.patient(), record.purpose(), events)
}

fn rebuilt(events: &[ConsentEvent], index: usize, edit: impl FnOnce(&mut ConsentEventParts)) -> Vec<ConsentEvent> {
    let mut events = events.to_vec();
    let mut parts = events[index].to_parts();
    edit(&mut parts);
    events[index] = ConsentEvent::try_from(parts).unwrap();
    events
}

#[test]
fn replaying_the_history_gives_the_record_and_every_prefix_gives_the_record_of_its_time() {
    let (record, events) = history();
    assert_eq!(replay(&record, &events).unwrap(), record);
    assert_eq!(events[3].from_state(), ConsentState::Expired, "the archive was applied to the lapsed grant");
    let empty = replay(&record, &[]).unwrap();
    assert_eq!(empty, ConsentRecord::new(record.patient(), PURPOSE));
    assert_eq!((empty.version(), empty.recorded_state()), (0, ConsentState::None));
    let after_two = replay(&record, &events[..2]).unwrap();
    assert_eq!((after_two.version(), after_two.recorded_state()), (2, ConsentState::Granted));
    assert_eq!(after_two.expires_at(), Some(minutes(30)));
}

#[test]
fn history_of_another_patient_or_purpose_is_refused() {
    let (record, events) = history();
    let error = ConsentRecord::replay(PatientId::new(), PURPOSE, &events).unwrap_err();
    assert!(matches!(error, ConsentError::InconsistentHistory { seq: 1, .. }), "{error:?}");
    assert!(error.is_storage_corruption());
    let error = ConsentRecord::replay(record.patient(), Purpose::MarketingEmail, &events).unwrap_err();
    assert!(matches!(error, ConsentError::InconsistentHistory { seq: 1, .. }), "{error:?}");
}

#[test]
fn gaps_repeats_and_reordering_are_refused() {
    let (record, events) = history();
    let missing = [&events[0], &events[2]];
    assert!(matches!(
        ConsentRecord::replay(record.patient(), PURPOSE, missing),
        Err(ConsentError::InconsistentHistory { seq: 3, .. })
    ));
    let repeated = [&events[0], &events[0]];
    assert!(matches!(
        ConsentRecord::replay(record.patient(), PURPOSE, repeated),
        Err(ConsentError::InconsistentHistory { seq: 1, .. })
    ));
    let swapped = [&events[1], &events[0]];
    assert!(matches!(
        ConsentRecord::replay(record.patient(), PURPOSE, swapped),
        Err(ConsentError::InconsistentHistory { seq: 2, .. })
    ));
}

#[test]
fn a_tampered_event_does_not_replay() {
    let (record, events) = history();
    // Claim the lapsed grant was still in force when archived (granted -> archived is illegal, so
    // pick a claim the event check alone accepts: withdrawn -> archived).
    let tampered = rebuilt(&events, 3, |p| p.from = ConsentState::Withdrawn);
    assert!(matches!(replay(&record, &tampered), Err(ConsentError::InconsistentHistory { seq: 4, .. })));
    // Stretch the grant's expiry past the archive: the archive would then hit an active grant.
    let tampered = rebuilt(&events, 2, |p| p.expires_at = Some(minutes(100)));
    assert!(matches!(replay(&record, &tampered), Err(ConsentError::InconsistentHistory { seq: 4, .. })));
    // Backdate an event before its predecessor.
    let tampered = rebuilt(&events, 2, |p| p.occurred_at = minutes(5));
    assert!(matches!(replay(&record, &tampered), Err(ConsentError::InconsistentHistory { seq: 3, .. })));
}

#[test]
fn a_stored_event_must_be_a_transition_the_machine_allows() {
    let (_, events) = history();
    let parts = events[1].to_parts();
    let refused = |edit: fn(&mut ConsentEventParts)| {
        let mut parts = parts.clone();
        edit(&mut parts);
        let error = ConsentEvent::try_from(parts).unwrap_err();
        assert!(matches!(error, ConsentError::InconsistentHistory { .. }), "{error:?}");
    };
    refused(|p| p.seq = 0);
    refused(|p| p.to = ConsentState::Withdrawn);
    refused(|p| p.to = ConsentState::Expired);
    // requested -> withdrawn is a legal cell, but a withdrawal carries no expiry.
    refused(|p| {
        p.action = ConsentAction::Withdraw;
        p.to = ConsentState::Withdrawn;
    });
    refused(|p| p.expires_at = Some(p.occurred_at));
    assert_eq!(ConsentEvent::try_from(parts).unwrap(), events[1]);
}

#[test]
fn events_and_records_round_trip_through_parts_and_json() {
    let (record, events) = history();
    for event in &events {
        assert_eq!(&ConsentEvent::try_from(event.to_parts()).unwrap(), event);
        let json = serde_json::to_value(event).unwrap();
        assert_eq!(json["action"], event.action().as_str());
        assert_eq!(json["from"], event.from_state().as_str());
        assert_eq!(json["evidence"]["text"]["sha256"], event.evidence().text.sha256.to_hex());
        assert_eq!(&serde_json::from_value::<ConsentEvent>(json).unwrap(), event);
    }
    let json = serde_json::to_value(&events[1]).unwrap();
    assert_eq!(json["occurred_at"], "2026-03-01T09:10:00Z");
    assert_eq!(json["expires_at"], "2026-03-01T09:30:00Z");
    assert_eq!(ConsentRecord::try_from(record.to_parts()).unwrap(), record);
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(serde_json::from_value::<ConsentRecord>(json).unwrap(), record);

    // A tampered row is refused on deserialisation too.
    let mut json = serde_json::to_value(&events[1]).unwrap();
    json["to"] = "archived".into();
    assert!(serde_json::from_value::<ConsentEvent>(json).is_err());
}

#[test]
fn a_stored_record_row_must_be_consistent() {
    let granted = record_after(PURPOSE, &[(grant(Some(minutes(30))), 0)]).to_parts();
    let refused = |edit: &dyn Fn(&mut ConsentRecordParts)| {
        let mut parts = granted.clone();
        edit(&mut parts);
        let error = ConsentRecord::try_from(parts).unwrap_err();
        assert!(matches!(error, ConsentError::InconsistentRecord { .. }), "{error:?}");
        assert_eq!(error.kind(), "consent_inconsistent_record");
    };
    refused(&|p| p.state = ConsentState::Expired);
    refused(&|p| p.state = ConsentState::None);
    refused(&|p| p.version = 0);
    refused(&|p| p.changed_at = None);
    refused(&|p| p.text = None);
    refused(&|p| p.channel = None);
    refused(&|p| p.state = ConsentState::Withdrawn);
    refused(&|p| p.expires_at = Some(minutes(0)));
    refused(&|p| p.expires_at = Some(minutes(-1)));
    let nothing = ConsentRecord::new(PatientId::new(), PURPOSE);
    assert_eq!(ConsentRecord::try_from(nothing.to_parts()).unwrap(), nothing);
    assert!(ConsentRecord::try_from(granted).is_ok());
}

#[test]
fn a_record_restored_from_its_row_goes_on_like_the_original() {
    let (mut record, _) = history();
    let mut restored = ConsentRecord::try_from(record.to_parts()).unwrap();
    let now = minutes(80) + Duration::seconds(1);
    let a = record.apply(grant(None), evidence(Channel::Web), now).unwrap();
    let b = restored.apply(grant(None), evidence(Channel::Web), now).unwrap();
    assert_eq!(a, b);
    assert_eq!(record, restored);
}
