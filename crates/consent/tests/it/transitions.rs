//! Every cell of the state table, legal and illegal, through `ConsentRecord::apply`.

use crate::support::*;
use consent::{
    Channel, ConsentAction, ConsentCommand, ConsentError, ConsentRecord, ConsentState, Evidence, InboundChannel,
    NoteRef, Purpose, marketing_purpose_for_channel, may_contact,
};
use kernel::{Actor, PatientId};
use time::Duration;

use ConsentAction as A;
use ConsentState as S;

fn command_for(action: ConsentAction) -> ConsentCommand {
    match action {
        A::Request => ConsentCommand::Request,
        A::Grant => grant(None),
        A::Withdraw => ConsentCommand::Withdraw,
        A::Archive => ConsentCommand::Archive,
    }
}

/// (from, action, expected result state or None for illegal), written out independently of the
/// crate's own table.
const CELLS: [(ConsentState, ConsentAction, Option<ConsentState>); 24] = [
    (S::None, A::Request, Some(S::Requested)),
    (S::None, A::Grant, Some(S::Granted)),
    (S::None, A::Withdraw, None),
    (S::None, A::Archive, None),
    (S::Requested, A::Request, Some(S::Requested)),
    (S::Requested, A::Grant, Some(S::Granted)),
    (S::Requested, A::Withdraw, Some(S::Withdrawn)),
    (S::Requested, A::Archive, Some(S::Archived)),
    (S::Granted, A::Request, None),
    (S::Granted, A::Grant, Some(S::Granted)),
    (S::Granted, A::Withdraw, Some(S::Withdrawn)),
    (S::Granted, A::Archive, None),
    (S::Expired, A::Request, Some(S::Requested)),
    (S::Expired, A::Grant, Some(S::Granted)),
    (S::Expired, A::Withdraw, None),
    (S::Expired, A::Archive, Some(S::Archived)),
    (S::Withdrawn, A::Request, Some(S::Requested)),
    (S::Withdrawn, A::Grant, Some(S::Granted)),
    (S::Withdrawn, A::Withdraw, None),
    (S::Withdrawn, A::Archive, Some(S::Archived)),
    (S::Archived, A::Request, Some(S::Requested)),
    (S::Archived, A::Grant, Some(S::Granted)),
    (S::Archived, A::Withdraw, None),
    (S::Archived, A::Archive, None),
];

#[test]
fn every_cell_of_the_table_behaves_as_documented() {
    for (from, action, expected) in CELLS {
        let mut record = record_in(from);
        let before = record.clone();
        let now = minutes(10);
        let result = record.apply(command_for(action), evidence(Channel::Paper), now);
        match expected {
            Some(to) => {
                let event = result.unwrap_or_else(|e| panic!("{from} --{action}--> should be legal: {e}"));
                assert_eq!((event.from_state(), event.action(), event.to_state()), (from, action, to));
                assert_eq!(event.seq(), before.version() + 1);
                assert_eq!(event.occurred_at(), now);
                assert_eq!(record.recorded_state(), to);
                assert_eq!(record.effective_state(now), to);
                assert_eq!(record.version(), event.seq());
                assert_eq!(record.changed_at(), Some(now));
            }
            None => {
                let error = result.expect_err(&format!("{from} --{action}--> should be illegal"));
                let allowed: Vec<_> =
                    CELLS.iter().filter(|(f, _, to)| *f == from && to.is_some()).map(|(_, a, _)| *a).collect();
                assert_eq!(error, ConsentError::IllegalTransition { from, action, allowed });
                assert_eq!(error.kind(), "consent_illegal_transition");
                assert_eq!(record, before, "an illegal action changed the record");
            }
        }
    }
}

#[test]
fn allowed_actions_of_a_record_follow_its_effective_state() {
    for from in ConsentState::ALL.iter().copied() {
        let record = record_in(from);
        let expected: Vec<_> =
            CELLS.iter().filter(|(f, _, to)| *f == from && to.is_some()).map(|(_, a, _)| *a).collect();
        assert_eq!(record.allowed_actions(minutes(10)), expected, "{from}");
    }
}

#[test]
fn a_paper_form_is_granted_without_a_prior_request() {
    let mut record = ConsentRecord::new(PatientId::new(), Purpose::DataProcessing);
    let desk = receptionist();
    let signed = Evidence::new(text("intake-2026"), Channel::Paper, desk.clone())
        .with_note_ref(NoteRef::parse("scan-000123").unwrap());
    let event = record.apply(grant(None), signed.clone(), minutes(0)).unwrap();
    assert_eq!((event.from_state(), event.to_state()), (S::None, S::Granted));
    assert_eq!(event.evidence(), &signed);
    assert_eq!(event.evidence().recorded_by, desk);
    assert_eq!(record.granted_at(), Some(minutes(0)));
    assert_eq!(record.expires_at(), None);
    assert_eq!(record.text(), Some(&text("intake-2026")));
    assert_eq!(record.channel(), Some(Channel::Paper));
    // Without an expiry it stays granted, however long.
    assert_eq!(record.effective_state(minutes(0) + Duration::days(3650)), S::Granted);
}

#[test]
fn withdrawing_a_request_records_a_refusal_and_asking_again_is_allowed() {
    let mut record = record_after(Purpose::MarketingEmail, &[(ConsentCommand::Request, 0)]);
    let refusal = record.apply(ConsentCommand::Withdraw, evidence(Channel::Email), minutes(5)).unwrap();
    assert_eq!((refusal.from_state(), refusal.to_state()), (S::Requested, S::Withdrawn));
    let again = record.apply(ConsentCommand::Request, evidence(Channel::Email), minutes(60)).unwrap();
    assert_eq!((again.from_state(), again.to_state(), again.seq()), (S::Withdrawn, S::Requested, 3));
}

#[test]
fn a_renewal_records_the_new_text_and_replaces_the_expiry() {
    let mut record = record_after(Purpose::AppointmentReminders, &[(grant(Some(minutes(100))), 0)]);
    let renewed = Evidence::new(text("v2"), Channel::Web, receptionist());
    let event = record.apply(grant(None), renewed, minutes(50)).unwrap();
    assert_eq!((event.from_state(), event.to_state()), (S::Granted, S::Granted));
    assert_eq!(record.expires_at(), None, "the renewal's open-ended grant replaces the old expiry");
    assert_eq!(record.granted_at(), Some(minutes(50)));
    assert_eq!(record.text().map(|t| t.version.as_str()), Some("v2"));
    assert_eq!(record.effective_state(minutes(1000)), S::Granted);

    record.apply(grant(Some(minutes(80))), evidence(Channel::Web), minutes(60)).unwrap();
    assert_eq!(record.expires_at(), Some(minutes(80)));
    assert_eq!(record.effective_state(minutes(80)), S::Expired);
}

#[test]
fn an_archived_consent_starts_a_new_cycle_and_the_history_keeps_the_old_one() {
    let mut record = ConsentRecord::new(PatientId::new(), Purpose::TreatmentUpdates);
    let mut history = Vec::new();
    for (command, minute) in [
        (ConsentCommand::Request, 0),
        (grant(None), 1),
        (ConsentCommand::Withdraw, 2),
        (ConsentCommand::Archive, 3),
        (ConsentCommand::Request, 4),
        (grant(None), 5),
    ] {
        history.push(record.apply(command, evidence(Channel::Web), minutes(minute)).unwrap());
    }
    let path: Vec<_> = history.iter().map(|e| (e.seq(), e.from_state(), e.to_state())).collect();
    assert_eq!(
        path,
        [
            (1, S::None, S::Requested),
            (2, S::Requested, S::Granted),
            (3, S::Granted, S::Withdrawn),
            (4, S::Withdrawn, S::Archived),
            (5, S::Archived, S::Requested),
            (6, S::Requested, S::Granted),
        ]
    );
    assert_eq!(ConsentRecord::replay(record.patient(), record.purpose(), &history).unwrap(), record);
}

#[test]
fn a_change_dated_before_the_previous_one_is_refused_and_changes_nothing() {
    let mut record = record_after(Purpose::AppointmentReminders, &[(grant(None), 10)]);
    let before = record.clone();
    let error = record.apply(ConsentCommand::Withdraw, evidence(Channel::Phone), minutes(9)).unwrap_err();
    assert_eq!(error, ConsentError::TimeBeforeLastChange { previous: minutes(10), at: minutes(9) });
    assert_eq!(error.kind(), "consent_time_before_last_change");
    assert_eq!(record, before);
    // The same instant is fine: two changes may share a timestamp.
    record.apply(ConsentCommand::Withdraw, evidence(Channel::Phone), minutes(10)).unwrap();
}

#[test]
fn decide_does_not_change_the_record() {
    let record = record_in(S::Requested);
    let before = record.clone();
    let event = record.decide(grant(None), evidence(Channel::Web), minutes(20)).unwrap();
    assert_eq!(event.to_state(), S::Granted);
    assert_eq!(record, before);
}

#[test]
fn a_stop_over_whatsapp_withdraws_marketing_whatsapp_only() {
    let patient = PatientId::new();
    let mut records = vec![
        record_for(patient, Purpose::DataProcessing, &[(grant(None), 0)]),
        record_for(patient, Purpose::MarketingWhatsapp, &[(grant(None), 0)]),
        record_for(patient, Purpose::MarketingSms, &[(grant(None), 0)]),
        record_for(patient, Purpose::AppointmentReminders, &[(grant(None), 0)]),
    ];
    let now = minutes(30);
    let purpose = marketing_purpose_for_channel(InboundChannel::WhatsApp);
    let Some(record) = records.iter_mut().find(|r| r.purpose() == purpose) else { panic!("no record") };
    assert!(record.allowed_actions(now).contains(&A::Withdraw));
    let stop = Evidence::new(
        record.text().unwrap().clone(),
        InboundChannel::WhatsApp.evidence_channel(),
        Actor::Webhook { provider: "whatsapp".into() },
    )
    .with_note_ref(NoteRef::parse("wamid.inbound-stop-1").unwrap());
    let event = record.apply(ConsentCommand::Withdraw, stop, now).unwrap();
    assert_eq!(event.evidence().channel, Channel::Whatsapp);
    assert_eq!(event.evidence().note_ref.as_ref().map(NoteRef::as_str), Some("wamid.inbound-stop-1"));

    assert!(!may_contact(&records, Purpose::MarketingWhatsapp, now));
    assert!(may_contact(&records, Purpose::MarketingSms, now));
    assert!(may_contact(&records, Purpose::AppointmentReminders, now));
    // A second STOP finds nothing to withdraw: the handler sees it in allowed_actions.
    let record = records.iter().find(|r| r.purpose() == purpose).unwrap();
    assert!(!record.allowed_actions(minutes(31)).contains(&A::Withdraw));
}

#[test]
fn events_and_records_belong_to_their_patient_and_purpose() {
    let patient = PatientId::new();
    let mut record = ConsentRecord::new(patient, Purpose::ThirdPartySharing);
    let event = record.apply(ConsentCommand::Request, evidence(Channel::Web), minutes(0)).unwrap();
    assert_eq!((event.patient(), event.purpose()), (patient, Purpose::ThirdPartySharing));
    assert_eq!((record.patient(), record.purpose()), (patient, Purpose::ThirdPartySharing));
    assert_eq!(event.expires_at(), None);
}
