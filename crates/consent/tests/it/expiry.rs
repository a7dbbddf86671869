//! Expiry by time: the boundary, what may be done with an expired consent, and how times are
//! normalised.

use crate::support::*;
use consent::{Channel, ConsentAction, ConsentCommand, ConsentError, ConsentState, Purpose, may_contact};
use time::macros::{datetime, offset};
use time::{Duration, UtcOffset};

const PURPOSE: Purpose = Purpose::AppointmentReminders;

#[test]
fn exactly_at_expires_at_counts_as_expired() {
    let expires_at = minutes(60);
    let record = record_after(PURPOSE, &[(grant(Some(expires_at)), 0)]);
    let records = [record.clone()];
    let just_before = expires_at - Duration::microseconds(1);

    assert_eq!(record.effective_state(just_before), ConsentState::Granted);
    assert!(may_contact(&records, PURPOSE, just_before));
    assert_eq!(record.effective_state(expires_at - Duration::nanoseconds(1)), ConsentState::Granted);

    assert_eq!(record.effective_state(expires_at), ConsentState::Expired);
    assert!(!may_contact(&records, PURPOSE, expires_at));
    for later in [Duration::nanoseconds(1), Duration::seconds(1), Duration::days(400)] {
        assert_eq!(record.effective_state(expires_at + later), ConsentState::Expired);
        assert!(!may_contact(&records, PURPOSE, expires_at + later));
    }
    // Nothing was written: the stored state still says granted, and the expiry is kept.
    assert_eq!(record.recorded_state(), ConsentState::Granted);
    assert_eq!(record.expires_at(), Some(expires_at));
    assert_eq!(record.granted_at(), Some(minutes(0)));
}

#[test]
fn an_expired_consent_cannot_be_withdrawn_but_can_be_archived() {
    let expires_at = minutes(60);
    let mut record = record_after(PURPOSE, &[(grant(Some(expires_at)), 0)]);
    let before = record.clone();
    let error = record.apply(ConsentCommand::Withdraw, evidence(Channel::Sms), expires_at).unwrap_err();
    assert_eq!(
        error,
        ConsentError::IllegalTransition {
            from: ConsentState::Expired,
            action: ConsentAction::Withdraw,
            allowed: vec![ConsentAction::Request, ConsentAction::Grant, ConsentAction::Archive],
        }
    );
    assert_eq!(record, before);

    // One microsecond earlier the same withdrawal is legal.
    let mut still_active = before.clone();
    let event = still_active
        .apply(ConsentCommand::Withdraw, evidence(Channel::Sms), expires_at - Duration::microseconds(1))
        .unwrap();
    assert_eq!(event.from_state(), ConsentState::Granted);

    let event = record.apply(ConsentCommand::Archive, evidence(Channel::Web), expires_at).unwrap();
    assert_eq!((event.from_state(), event.to_state()), (ConsentState::Expired, ConsentState::Archived));
    assert_eq!(record.expires_at(), None, "an archived record has no expiry");
    assert_eq!(record.granted_at(), None);
}

#[test]
fn a_new_grant_after_expiry_is_in_force_again() {
    let mut record = record_after(PURPOSE, &[(grant(Some(minutes(60))), 0)]);
    let event = record.apply(grant(Some(minutes(200))), evidence(Channel::Paper), minutes(90)).unwrap();
    assert_eq!((event.from_state(), event.to_state()), (ConsentState::Expired, ConsentState::Granted));
    let records = [record];
    assert!(may_contact(&records, PURPOSE, minutes(90)));
    assert!(may_contact(&records, PURPOSE, minutes(199)));
    assert!(!may_contact(&records, PURPOSE, minutes(200)));
}

#[test]
fn the_expiry_must_be_after_the_grant() {
    let now = minutes(10);
    for expires_at in [now, now - Duration::seconds(1), now + Duration::nanoseconds(999)] {
        let mut record = record_after(PURPOSE, &[]);
        let error = record.apply(grant(Some(expires_at)), evidence(Channel::Web), now).unwrap_err();
        assert!(matches!(error, ConsentError::ExpiryNotAfterGrant { .. }), "{expires_at}: {error:?}");
        assert_eq!(error.field(), Some("expires_at"));
        assert_eq!(record.recorded_state(), ConsentState::None);
    }
    let mut record = record_after(PURPOSE, &[]);
    record.apply(grant(Some(now + Duration::microseconds(1))), evidence(Channel::Web), now).unwrap();
    assert_eq!(record.effective_state(now), ConsentState::Granted);
}

#[test]
fn times_are_stored_in_utc_whole_microseconds() {
    // 10:00:00.123456789 at +02:00 is 08:00:00.123456 UTC once truncated.
    let now = datetime!(2026-05-01 10:00:00.123_456_789 +02:00);
    let expires_at = datetime!(2026-06-01 12:00:00.000_000_999 +02:00);
    let mut record = record_after(PURPOSE, &[]);
    let event = record.apply(grant(Some(expires_at)), evidence(Channel::Web), now).unwrap();
    assert_eq!(event.occurred_at(), datetime!(2026-05-01 08:00:00.123_456 UTC));
    assert_eq!(event.occurred_at().offset(), UtcOffset::UTC);
    assert_eq!(event.expires_at(), Some(datetime!(2026-06-01 10:00:00 UTC)));
    assert_eq!(record.changed_at(), Some(event.occurred_at()));
    // Truncation moves an expiry earlier, never later: the consent never outlives its terms.
    assert!(record.expires_at().unwrap() <= expires_at);
    assert_eq!(record.effective_state(expires_at.to_offset(offset!(-05:00))), ConsentState::Expired);
}

#[test]
fn a_withdrawal_before_expiry_ends_the_consent_at_once() {
    let mut record = record_after(PURPOSE, &[(grant(Some(minutes(600))), 0)]);
    record.apply(ConsentCommand::Withdraw, evidence(Channel::Phone), minutes(30)).unwrap();
    assert_eq!(record.expires_at(), None);
    assert_eq!(record.effective_state(minutes(30)), ConsentState::Withdrawn);
    assert_eq!(record.effective_state(minutes(700)), ConsentState::Withdrawn);
    assert!(!may_contact(&[record], PURPOSE, minutes(31)));
}
