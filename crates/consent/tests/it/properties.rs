//! Properties over random sequences of actions at random (mostly increasing) times, with random
//! expiries, sub-microsecond parts and the occasional clock step backwards.

use crate::support::*;
use consent::{
    Channel, ConsentAction, ConsentCommand, ConsentError, ConsentEvent, ConsentRecord, ConsentState, Evidence, Purpose,
    allowed_actions, may_contact, next_state,
};
use kernel::PatientId;
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone)]
struct Step {
    action: ConsentAction,
    /// Time since the previous step (may be negative: a lagging clock).
    advance: Duration,
    /// For a grant: expiry relative to the step's time (may be zero or negative: refused).
    expires_in: Option<Duration>,
    channel: Channel,
}

fn duration_nanos(range: std::ops::Range<i64>) -> impl Strategy<Value = Duration> {
    (range, 0..1_000_000_000i64).prop_map(|(seconds, nanos)| Duration::seconds(seconds) + Duration::nanoseconds(nanos))
}

fn step() -> impl Strategy<Value = Step> {
    let advance = prop_oneof![
        8 => duration_nanos(0..7_200),
        2 => Just(Duration::ZERO),
        1 => duration_nanos(-120..0),
    ];
    let expires_in = prop_oneof![
        2 => Just(None),
        6 => duration_nanos(0..14_400).prop_map(Some),
        1 => duration_nanos(-600..0).prop_map(Some),
        1 => Just(Some(Duration::ZERO)),
    ];
    (
        prop::sample::select(ConsentAction::ALL.to_vec()),
        advance,
        expires_in,
        prop::sample::select(Channel::ALL.to_vec()),
    )
        .prop_map(|(action, advance, expires_in, channel)| Step { action, advance, expires_in, channel })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 0..40)
}

fn floor_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap()
}

fn command(step: &Step, now: OffsetDateTime) -> ConsentCommand {
    match step.action {
        ConsentAction::Request => ConsentCommand::Request,
        ConsentAction::Grant => ConsentCommand::Grant { expires_at: step.expires_in.map(|d| now + d) },
        ConsentAction::Withdraw => ConsentCommand::Withdraw,
        ConsentAction::Archive => ConsentCommand::Archive,
    }
}

/// What the rules say `apply` must answer, worked out independently of `decide`.
fn expected(record: &ConsentRecord, step: &Step, now: OffsetDateTime) -> Result<ConsentState, &'static str> {
    if record.changed_at().is_some_and(|previous| floor_micros(now) < previous) {
        return Err("consent_time_before_last_change");
    }
    let from = record.effective_state(now);
    let Some(to) = next_state(from, step.action) else {
        return Err("consent_illegal_transition");
    };
    if let ConsentCommand::Grant { expires_at: Some(expires_at) } = command(step, now)
        && floor_micros(expires_at) <= floor_micros(now)
    {
        return Err("consent_expiry_not_after_grant");
    }
    Ok(to)
}

/// Instants around `now` and around the record's expiry, where the answer may change.
fn probe_times(record: &ConsentRecord, now: OffsetDateTime) -> Vec<OffsetDateTime> {
    let mut times = vec![now, now + Duration::seconds(1), now + Duration::days(365)];
    if let Some(expires_at) = record.expires_at() {
        times.extend([
            expires_at - Duration::microseconds(1),
            expires_at - Duration::nanoseconds(1),
            expires_at,
            expires_at + Duration::nanoseconds(1),
            expires_at + Duration::days(30),
        ]);
    }
    times
}

/// Applies `steps` and checks the per-step properties; returns the record and its history.
fn run(
    patient: PatientId,
    purpose: Purpose,
    start: OffsetDateTime,
    steps: &[Step],
) -> (ConsentRecord, Vec<ConsentEvent>) {
    let mut record = ConsentRecord::new(patient, purpose);
    let mut events = Vec::new();
    let mut now = start;
    // The expiry of a grant seen lapsed, until a new grant succeeds.
    let mut lapsed_at: Option<OffsetDateTime> = None;
    for step in steps {
        now += step.advance;
        let before = record.clone();
        let effective_before = record.effective_state(now);
        let evidence = Evidence::new(text("v1"), step.channel, receptionist());
        let result = record.apply(command(step, now), evidence, now);
        match (expected(&before, step, now), result) {
            (Ok(to), Ok(event)) => {
                assert_eq!((event.from_state(), event.action(), event.to_state()), (effective_before, step.action, to));
                assert_eq!(event.seq(), before.version() + 1);
                assert_eq!(record.recorded_state(), to);
                assert_eq!(ConsentEvent::try_from(event.to_parts()).unwrap(), event);
                if step.action == ConsentAction::Grant {
                    lapsed_at = None;
                }
                events.push(event);
            }
            (Err(kind), Err(error)) => {
                assert_eq!(error.kind(), kind, "{error}");
                if let ConsentError::IllegalTransition { from, action, allowed } = &error {
                    assert_eq!((*from, *action), (effective_before, step.action));
                    assert_eq!(allowed, &allowed_actions(effective_before));
                    assert!(!allowed.contains(action));
                }
                assert_eq!(record, before, "a refused action changed the record");
            }
            (expected, actual) => panic!("expected {expected:?}, got {actual:?}"),
        }

        // The state is one of the machine's; `expired` only ever derived from a stored grant.
        let effective = record.effective_state(now);
        assert!(ConsentState::ALL.contains(&effective));
        assert!(record.recorded_state().is_stored());
        if effective == ConsentState::Expired {
            assert_eq!(record.recorded_state(), ConsentState::Granted);
            lapsed_at = record.expires_at();
            assert!(lapsed_at.is_some());
        } else {
            assert_eq!(effective, record.recorded_state());
        }
        assert_eq!(record.version(), events.len() as u64);

        // Replaying the history gives the same record; so does restoring the stored row.
        assert_eq!(ConsentRecord::replay(patient, purpose, &events).unwrap(), record);
        assert_eq!(ConsentRecord::try_from(record.to_parts()).unwrap(), record);

        // may_contact is true iff the effective state is granted, checked where it could flip
        // (a purpose with prerequisites is never allowed on its own record alone).
        let records = std::slice::from_ref(&record);
        for t in probe_times(&record, now) {
            let granted = record.effective_state(t) == ConsentState::Granted;
            let stands_alone = purpose.prerequisites().is_empty();
            assert_eq!(may_contact(records, purpose, t), granted && stands_alone, "at {t}");
            let by_the_rule =
                record.recorded_state() == ConsentState::Granted && record.expires_at().is_none_or(|e| t < e);
            assert_eq!(granted, by_the_rule, "at {t}");
        }

        // Once expired, no contact at any time from the expiry on until a new grant, whatever
        // else (a request, an archive) happened in between.
        if let Some(expired_at) = lapsed_at {
            for t in [expired_at, now, now + Duration::seconds(1), now + Duration::days(3650)] {
                if t >= expired_at {
                    assert!(
                        !may_contact(records, purpose, t),
                        "contact allowed at {t} after expiry without a new grant"
                    );
                }
            }
        }
    }
    (record, events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(
        steps in steps(),
        start_nanos in 0..1_000_000_000i64,
    ) {
        let start = T0 + Duration::nanoseconds(start_nanos);
        run(PatientId::new(), Purpose::AppointmentReminders, start, &steps);
    }

    #[test]
    fn replay_refuses_any_dropped_event(steps in steps(), drop_at in any::<prop::sample::Index>()) {
        let patient = PatientId::new();
        let (_, events) = run(patient, Purpose::TreatmentUpdates, T0, &steps);
        prop_assume!(events.len() >= 2);
        let dropped = drop_at.index(events.len() - 1); // never the last: that would be a shorter, valid history
        let mut gapped = events.clone();
        gapped.remove(dropped);
        let error = ConsentRecord::replay(patient, Purpose::TreatmentUpdates, &gapped).unwrap_err();
        prop_assert!(error.is_storage_corruption());
    }

    #[test]
    fn marketing_is_allowed_iff_it_and_data_processing_are_both_granted(
        processing_steps in steps(),
        marketing_steps in steps(),
        probe_offsets in prop::collection::vec(duration_nanos(0..400_000), 1..8),
    ) {
        let patient = PatientId::new();
        let (processing, _) = run(patient, Purpose::DataProcessing, T0, &processing_steps);
        let (marketing, _) = run(patient, Purpose::MarketingWhatsapp, T0, &marketing_steps);
        let records = [processing.clone(), marketing.clone()];
        for offset in probe_offsets {
            let t = T0 + offset;
            let both = processing.is_active_at(t) && marketing.is_active_at(t);
            prop_assert_eq!(may_contact(&records, Purpose::MarketingWhatsapp, t), both);
            prop_assert_eq!(may_contact(&records, Purpose::DataProcessing, t), processing.is_active_at(t));
            prop_assert!(!may_contact(std::slice::from_ref(&marketing), Purpose::MarketingWhatsapp, t));
        }
    }
}
