//! `may_contact`: the one question every sender asks.

use crate::support::*;
use consent::{ConsentCommand, ConsentRecord, Purpose, may_contact};
use kernel::PatientId;

#[test]
fn nobody_is_contacted_without_a_record_for_the_purpose() {
    let now = minutes(10);
    assert!(!may_contact(&[], Purpose::AppointmentReminders, now));
    let patient = PatientId::new();
    let records = [
        record_for(patient, Purpose::MarketingEmail, &[(grant(None), 0)]),
        ConsentRecord::new(patient, Purpose::AppointmentReminders),
    ];
    assert!(!may_contact(&records, Purpose::AppointmentReminders, now), "never asked");
    assert!(!may_contact(&records, Purpose::TreatmentUpdates, now), "no record at all");
}

#[test]
fn only_a_grant_in_force_allows_contact() {
    use consent::ConsentState as S;
    let now = minutes(10);
    for &state in consent::ConsentState::ALL {
        let record = record_in(state);
        let expected = state == S::Granted;
        assert_eq!(may_contact(&[record], Purpose::AppointmentReminders, now), expected, "{state}");
    }
}

#[test]
fn marketing_also_needs_data_processing() {
    let patient = PatientId::new();
    let now = minutes(10);
    let sms = record_for(patient, Purpose::MarketingSms, &[(grant(None), 0)]);
    assert!(!may_contact(std::slice::from_ref(&sms), Purpose::MarketingSms, now), "no data_processing record");

    let processing = record_for(patient, Purpose::DataProcessing, &[(grant(None), 0)]);
    let both = [processing.clone(), sms.clone()];
    assert!(may_contact(&both, Purpose::MarketingSms, now));
    assert!(may_contact(&both, Purpose::DataProcessing, now));

    let withdrawn = record_for(patient, Purpose::DataProcessing, &[(grant(None), 0), (ConsentCommand::Withdraw, 5)]);
    assert!(!may_contact(&[withdrawn.clone(), sms.clone()], Purpose::MarketingSms, now));

    let lapsing = record_for(patient, Purpose::DataProcessing, &[(grant(Some(minutes(20))), 0)]);
    let records = [sms, lapsing];
    assert!(may_contact(&records, Purpose::MarketingSms, minutes(19)));
    assert!(!may_contact(&records, Purpose::MarketingSms, minutes(20)), "the prerequisite lapsed");

    // Reminders do not depend on data_processing being recorded as a consent.
    let reminders = record_for(patient, Purpose::AppointmentReminders, &[(grant(None), 0)]);
    assert!(may_contact(&[withdrawn, reminders], Purpose::AppointmentReminders, now));
}

#[test]
fn records_of_several_patients_or_disagreeing_duplicates_fail_closed() {
    let now = minutes(10);
    let mine = record_after(Purpose::AppointmentReminders, &[(grant(None), 0)]);
    let someone_elses = record_after(Purpose::TreatmentUpdates, &[(grant(None), 0)]);
    assert!(may_contact(std::slice::from_ref(&mine), Purpose::AppointmentReminders, now));
    assert!(!may_contact(&[mine.clone(), someone_elses], Purpose::AppointmentReminders, now));

    let stale_copy = ConsentRecord::new(mine.patient(), Purpose::AppointmentReminders);
    assert!(!may_contact(&[mine.clone(), stale_copy], Purpose::AppointmentReminders, now));
    assert!(may_contact(&[mine.clone(), mine], Purpose::AppointmentReminders, now), "agreeing duplicates");
}
