//! Property tests: a valid chain verifies; every kind of tampering is reported at the right seq
//! with the right kind.

use crate::support::{chain_of, rechain, tenant};
use audit::{
    Action, Break, BreakKind, ChainHead, ChainVerifier, ChainedEntry, Checkpoint, GENESIS_HASH, Outcome,
    VerificationReport, verify_chain,
};
use kernel::{Actor, FixedClock, RequestId, TenantId};
use proptest::prelude::*;
use time::macros::datetime;

const MAX_LEN: usize = 24;

fn verify(tenant: TenantId, entries: &[ChainedEntry]) -> VerificationReport {
    verify_chain(tenant, entries, &[]).unwrap()
}

fn checkpoint_at(tenant: TenantId, entry: &ChainedEntry) -> Checkpoint {
    let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
    Checkpoint::new(tenant, entry.head(), &clock).unwrap()
}

fn seq_of(position: usize) -> u64 {
    position as u64 + 1
}

/// Edits one field of `entry` and returns the break the verifier must report there.
fn tamper(entry: &mut ChainedEntry, field: usize) -> BreakKind {
    let seq = entry.seq;
    let event = &mut entry.event;
    match field {
        0 => {
            entry.seq += 3;
            return BreakKind::SequenceGap { expected: seq, found: seq + 3 };
        }
        1 => {
            entry.seq -= 1;
            return BreakKind::OutOfOrder { expected: seq, found: seq - 1 };
        }
        2 => {
            entry.prev_hash[0] ^= 0x80;
            return BreakKind::PrevHashMismatch;
        }
        3 => entry.hash[31] ^= 0x01,
        4 => {
            event.tenant = tenant(u128::from_be_bytes(*event.tenant.as_uuid().as_bytes()).wrapping_add(1));
            return BreakKind::ForeignTenant;
        }
        5 => match &mut event.actor {
            Actor::System { component } => component.push('x'),
            other => *other = Actor::System { component: "intruder".into() },
        },
        6 => {
            let i = Action::ALL.iter().position(|a| *a == event.action).unwrap();
            event.action = Action::ALL[(i + 1) % Action::ALL.len()];
        }
        7 => event.resource_type.push('x'),
        8 => event.resource_id = if event.resource_id.is_some() { None } else { Some("x".into()) },
        9 => {
            let i = Outcome::ALL.iter().position(|o| *o == event.outcome).unwrap();
            event.outcome = Outcome::ALL[(i + 1) % Outcome::ALL.len()];
        }
        10 => {
            event.request_id =
                if event.request_id.is_some() { None } else { Some(RequestId::parse_inbound("r").unwrap()) };
        }
        11 => event.occurred_at += time::Duration::microseconds(1),
        12 => {
            event.detail.as_object_mut().unwrap().insert("tampered".into(), true.into());
        }
        _ => unreachable!(),
    }
    BreakKind::HashMismatch
}

const FIELDS: usize = 13;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_valid_chain_verifies((tenant, entries) in chain_of(MAX_LEN)) {
        let report = verify(tenant, &entries);
        prop_assert_eq!(report.first_break, None);
        prop_assert_eq!(report.entries_checked, entries.len() as u64);
        prop_assert_eq!(report.head, entries.last().map(ChainedEntry::head));
        // Streaming one at a time gives the same report, with checkpoints at every entry too.
        let checkpoints: Vec<_> = entries.iter().map(|e| checkpoint_at(tenant, e)).rev().collect();
        let mut verifier = ChainVerifier::new(tenant, &checkpoints).unwrap();
        for entry in &entries {
            prop_assert!(verifier.push(entry));
        }
        prop_assert_eq!(verifier.finish(), report);
    }

    #[test]
    fn a_chain_survives_a_json_round_trip((tenant, entries) in chain_of(8)) {
        // What an adapter storing JSON-ish columns does: serialise, parse, verify.
        let json = serde_json::to_string(&entries).unwrap();
        let back: Vec<ChainedEntry> = serde_json::from_str(&json).unwrap();
        prop_assert!(verify(tenant, &back).is_intact());
    }

    #[test]
    fn editing_any_field_of_any_entry_is_detected_there(
        (tenant, mut entries) in chain_of(MAX_LEN),
        position in any::<prop::sample::Index>(),
        field in 0..FIELDS,
    ) {
        let k = position.index(entries.len());
        let kind = tamper(&mut entries[k], field);
        let report = verify(tenant, &entries);
        prop_assert_eq!(report.first_break, Some(Break { seq: seq_of(k), kind }));
        prop_assert_eq!(report.head, k.checked_sub(1).map(|i| entries[i].head()));
        prop_assert_eq!(report.entries_checked, seq_of(k));
    }

    #[test]
    fn an_edit_with_its_own_hash_recomputed_breaks_the_next_link(
        (tenant, mut entries) in chain_of(MAX_LEN),
        position in any::<prop::sample::Index>(),
    ) {
        prop_assume!(entries.len() >= 2);
        let k = position.index(entries.len() - 1);
        entries[k].event.outcome = if entries[k].event.outcome == Outcome::Denied { Outcome::Success } else { Outcome::Denied };
        entries[k].hash = entries[k].compute_hash();
        let report = verify(tenant, &entries);
        prop_assert_eq!(report.first_break, Some(Break { seq: seq_of(k + 1), kind: BreakKind::PrevHashMismatch }));
    }

    #[test]
    fn deleting_any_entry_but_the_last_is_a_gap(
        (tenant, mut entries) in chain_of(MAX_LEN),
        position in any::<prop::sample::Index>(),
    ) {
        prop_assume!(entries.len() >= 2);
        let k = position.index(entries.len() - 1);
        entries.remove(k);
        let report = verify(tenant, &entries);
        prop_assert_eq!(
            report.first_break,
            Some(Break { seq: seq_of(k), kind: BreakKind::SequenceGap { expected: seq_of(k), found: seq_of(k + 1) } })
        );
    }

    #[test]
    fn deleting_and_renumbering_is_a_hash_mismatch(
        (tenant, mut entries) in chain_of(MAX_LEN),
        position in any::<prop::sample::Index>(),
    ) {
        prop_assume!(entries.len() >= 2);
        let k = position.index(entries.len() - 1);
        entries.remove(k);
        for (i, entry) in entries.iter_mut().enumerate().skip(k) {
            entry.seq = seq_of(i);
        }
        let report = verify(tenant, &entries);
        // The renumbered entry still links to its old predecessor's hash, unless that was the
        // deleted entry's own predecessor; either way it breaks at k.
        let kind = report.first_break.map(|b| (b.seq, b.kind));
        prop_assert!(
            kind == Some((seq_of(k), BreakKind::PrevHashMismatch)) || kind == Some((seq_of(k), BreakKind::HashMismatch)),
            "{:?}", kind
        );
    }

    #[test]
    fn swapping_two_adjacent_rows_is_detected_at_the_first(
        (tenant, mut entries) in chain_of(MAX_LEN),
        position in any::<prop::sample::Index>(),
    ) {
        prop_assume!(entries.len() >= 2);
        let k = position.index(entries.len() - 1);

        // Rows swapped, each keeping its seq: out of seq order.
        let mut rows = entries.clone();
        rows.swap(k, k + 1);
        let report = verify(tenant, &rows);
        prop_assert_eq!(
            report.first_break,
            Some(Break { seq: seq_of(k), kind: BreakKind::SequenceGap { expected: seq_of(k), found: seq_of(k + 1) } })
        );

        // Contents swapped under the seq column: the link breaks.
        let mut contents = entries.clone();
        contents.swap(k, k + 1);
        contents[k].seq = seq_of(k);
        contents[k + 1].seq = seq_of(k + 1);
        let report = verify(tenant, &contents);
        prop_assert_eq!(report.first_break, Some(Break { seq: seq_of(k), kind: BreakKind::PrevHashMismatch }));

        // Only the events swapped (seq and hashes left in place): the content no longer hashes.
        let (a, b) = (entries[k].event.clone(), entries[k + 1].event.clone());
        prop_assume!(a != b);
        entries[k].event = b;
        entries[k + 1].event = a;
        let report = verify(tenant, &entries);
        prop_assert_eq!(report.first_break, Some(Break { seq: seq_of(k), kind: BreakKind::HashMismatch }));
    }

    #[test]
    fn dropping_the_tail_past_a_checkpoint_is_a_truncation(
        (tenant, entries) in chain_of(MAX_LEN),
        pin in any::<prop::sample::Index>(),
        keep in any::<prop::sample::Index>(),
    ) {
        let c = pin.index(entries.len());
        let checkpoints = [checkpoint_at(tenant, &entries[c])];
        // Up to the checkpoint: intact. Dropping the tail after it: still intact.
        prop_assert!(verify_chain(tenant, &entries[..=c], &checkpoints).unwrap().is_intact());
        // Dropping anything at or before it: truncated right after what is left.
        let m = keep.index(c + 1);
        let report = verify_chain(tenant, &entries[..m], &checkpoints).unwrap();
        prop_assert_eq!(
            report.first_break,
            Some(Break {
                seq: seq_of(m),
                kind: BreakKind::TruncatedTail { checkpoint_seq: seq_of(c), last_seq: m as u64 },
            })
        );
        prop_assert_eq!(report.head, m.checked_sub(1).map(|i| entries[i].head()));
        // Without checkpoints a dropped tail is invisible: why checkpoints exist.
        prop_assert!(verify(tenant, &entries[..m]).is_intact());
    }

    #[test]
    fn a_rewritten_and_rehashed_suffix_is_caught_only_by_a_checkpoint(
        (tenant, entries) in chain_of(MAX_LEN),
        from in any::<prop::sample::Index>(),
        pin in any::<prop::sample::Index>(),
    ) {
        let k = from.index(entries.len());
        let c = k + pin.index(entries.len() - k);
        let checkpoints = [checkpoint_at(tenant, &entries[c])];

        let head = k.checked_sub(1).map_or(ChainHead::GENESIS, |i| entries[i].head());
        let mut events: Vec<_> = entries[k..].iter().map(|e| e.event.clone()).collect();
        events[0].outcome = if events[0].outcome == Outcome::Denied { Outcome::Success } else { Outcome::Denied };
        let forged: Vec<_> = entries[..k].iter().cloned().chain(rechain(head, events)).collect();

        prop_assert!(verify(tenant, &forged).is_intact());
        let report = verify_chain(tenant, &forged, &checkpoints).unwrap();
        prop_assert_eq!(
            report.first_break,
            Some(Break { seq: seq_of(c), kind: BreakKind::CheckpointMismatch { checkpoint_seq: seq_of(c) } })
        );
    }

    #[test]
    fn resuming_at_a_checkpoint_reports_what_the_full_verification_reports(
        (tenant, mut entries) in chain_of(MAX_LEN),
        anchor_at in any::<prop::sample::Index>(),
        pin_at in any::<prop::sample::Index>(),
        tampered in prop::option::of((any::<prop::sample::Index>(), 0..FIELDS)),
    ) {
        // The prefix up to the anchor is gone (purged); everything after it is verified.
        prop_assume!(entries.len() >= 2);
        let a = anchor_at.index(entries.len() - 1);
        let anchor = checkpoint_at(tenant, &entries[a]);
        let later = a + 1 + pin_at.index(entries.len() - a - 1);
        let checkpoints = [checkpoint_at(tenant, &entries[0]), anchor.clone(), checkpoint_at(tenant, &entries[later])];
        if let Some((position, field)) = tampered {
            let k = a + 1 + position.index(entries.len() - a - 1);
            tamper(&mut entries[k], field);
        }
        let full = verify_chain(tenant, &entries, &checkpoints).unwrap();
        let mut verifier = ChainVerifier::resume(tenant, &anchor, &checkpoints).unwrap();
        for entry in &entries[a + 1..] {
            if !verifier.push(entry) {
                break;
            }
        }
        let resumed = verifier.finish();
        prop_assert_eq!(resumed.first_break, full.first_break);
        prop_assert_eq!(resumed.entries_checked, full.entries_checked - (a as u64 + 1));
        // Where nothing after the anchor verified, the resumed report has no head of its own.
        let expected_head = full.head.filter(|head| head.seq > anchor.seq);
        prop_assert_eq!(resumed.head, expected_head);
    }

    #[test]
    fn a_rejected_checkpoint_is_reported_in_seq_order_with_the_chains_own_breaks(
        (tenant, mut entries) in chain_of(MAX_LEN),
        rejected_at in 1u64..(MAX_LEN as u64 + 4),
        unsigned in any::<bool>(),
        tampered in prop::option::of((any::<prop::sample::Index>(), 0..FIELDS)),
    ) {
        let kind = if unsigned {
            BreakKind::CheckpointUnsigned { checkpoint_seq: rejected_at }
        } else {
            BreakKind::CheckpointSignatureInvalid { checkpoint_seq: rejected_at }
        };
        let rejected = Break { seq: rejected_at, kind };
        let own = tampered.map(|(position, field)| {
            let k = position.index(entries.len());
            Break { seq: seq_of(k), kind: tamper(&mut entries[k], field) }
        });
        let mut verifier = ChainVerifier::new(tenant, &[]).unwrap().with_rejected_checkpoints([rejected]);
        for entry in &entries {
            if !verifier.push(entry) {
                break;
            }
        }
        let report = verifier.finish();
        // Whichever comes first; the rejected checkpoint on a tie.
        let expected = match own {
            Some(own) if own.seq < rejected.seq => own,
            _ => rejected,
        };
        prop_assert_eq!(report.first_break, Some(expected));
        // Nothing at or after the break is vouched for.
        let verified = (expected.seq - 1).min(entries.len() as u64);
        prop_assert_eq!(report.head, verified.checked_sub(1).map(|i| entries[i as usize].head()));
    }

    #[test]
    fn an_entry_of_another_tenant_is_foreign(
        (tenant_a, entries) in chain_of(MAX_LEN),
    ) {
        let other = crate::support::tenant(u128::from_be_bytes(*tenant_a.as_uuid().as_bytes()).wrapping_add(7));
        let report = verify(other, &entries);
        prop_assert_eq!(report.first_break, Some(Break { seq: 1, kind: BreakKind::ForeignTenant }));
    }
}

#[test]
fn the_empty_chain_is_intact_unless_a_checkpoint_says_otherwise() {
    let tenant = tenant(1);
    let report = verify(tenant, &[]);
    assert!(report.is_intact());
    assert_eq!((report.entries_checked, report.head), (0, None));

    let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
    let checkpoint = Checkpoint::new(tenant, ChainHead { seq: 3, hash: GENESIS_HASH }, &clock).unwrap();
    let report = verify_chain(tenant, [], &[checkpoint]).unwrap();
    assert_eq!(
        report.first_break,
        Some(Break { seq: 1, kind: BreakKind::TruncatedTail { checkpoint_seq: 3, last_seq: 0 } })
    );
}

#[test]
fn a_resumed_chain_must_link_to_its_anchor() {
    let tenant = tenant(4);
    let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
    let actor = Actor::System { component: "test".into() };
    let events = (0..6).map(|_| audit::AuditEvent::new(tenant, actor.clone(), Action::AuthLogin, "session", &clock));
    let entries = crate::support::chain(events.collect());
    let anchor = checkpoint_at(tenant, &entries[2]);
    let kept = &entries[3..];
    let resume = |anchor: &Checkpoint, entries: &[ChainedEntry], checkpoints: &[Checkpoint]| {
        verify_chain_from(tenant, anchor, entries, checkpoints)
    };

    let report = resume(&anchor, kept, &[]);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries_checked, report.head), (3, Some(entries[5].head())));

    // An anchor that is not the kept chain's predecessor: the first kept entry does not link.
    let mut wrong = anchor.clone();
    wrong.head_hash[0] ^= 1;
    assert_eq!(resume(&wrong, kept, &[]).first_break, Some(Break { seq: 4, kind: BreakKind::PrevHashMismatch }));
    // More missing than the purge removed: a gap right after the anchor.
    assert_eq!(
        resume(&anchor, &entries[4..], &[]).first_break,
        Some(Break { seq: 4, kind: BreakKind::SequenceGap { expected: 4, found: 5 } })
    );
    // A trusted checkpoint at the anchor's seq that disagrees with it.
    assert_eq!(
        resume(&anchor, kept, &[wrong]).first_break,
        Some(Break { seq: 3, kind: BreakKind::CheckpointMismatch { checkpoint_seq: 3 } })
    );
    // Nothing kept although a checkpoint pins a later entry: truncated right after the anchor.
    let report = resume(&anchor, &[], &[checkpoint_at(tenant, &entries[5])]);
    assert_eq!(
        report.first_break,
        Some(Break { seq: 4, kind: BreakKind::TruncatedTail { checkpoint_seq: 6, last_seq: 3 } })
    );
    assert_eq!((report.entries_checked, report.head), (0, None));
    // Checkpoints inside the purged prefix are skipped, not compared.
    let purged_pin = checkpoint_at(tenant, &entries[0]);
    assert!(resume(&anchor, kept, &[purged_pin]).is_intact());

    // The anchor must be this tenant's and pin an entry.
    let foreign = Checkpoint { tenant: crate::support::tenant(5), ..anchor.clone() };
    assert!(matches!(ChainVerifier::resume(tenant, &foreign, &[]), Err(audit::AuditError::CheckpointTenantMismatch)));
    let zero = Checkpoint { seq: 0, ..anchor };
    assert!(matches!(ChainVerifier::resume(tenant, &zero, &[]), Err(audit::AuditError::InvalidCheckpoint)));
}

fn verify_chain_from(
    tenant: TenantId,
    anchor: &Checkpoint,
    entries: &[ChainedEntry],
    checkpoints: &[Checkpoint],
) -> VerificationReport {
    let mut verifier = ChainVerifier::resume(tenant, anchor, checkpoints).unwrap();
    for entry in entries {
        if !verifier.push(entry) {
            break;
        }
    }
    verifier.finish()
}

#[test]
fn rejected_checkpoints_past_the_end_are_reported_against_a_truncated_tail() {
    let tenant = tenant(6);
    let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
    let actor = Actor::System { component: "test".into() };
    let events = (0..5).map(|_| audit::AuditEvent::new(tenant, actor.clone(), Action::AuthLogin, "session", &clock));
    let entries = crate::support::chain(events.collect());
    let pin = checkpoint_at(tenant, &entries[4]);
    let forged = |seq| Break { seq, kind: BreakKind::CheckpointSignatureInvalid { checkpoint_seq: seq } };
    let run = |kept: &[ChainedEntry], rejected: Vec<Break>| {
        let mut verifier = ChainVerifier::new(tenant, std::slice::from_ref(&pin)).unwrap();
        verifier = verifier.with_rejected_checkpoints(rejected);
        for entry in kept {
            verifier.push(entry);
        }
        verifier.finish()
    };
    // Entries 4 and 5 dropped; a forged checkpoint pins 9 (past everything): the truncation is first.
    let report = run(&entries[..3], vec![forged(9)]);
    assert_eq!(report.first_break.map(|b| b.seq), Some(4));
    assert!(matches!(report.first_break.unwrap().kind, BreakKind::TruncatedTail { .. }));
    // A forged checkpoint at 4, where the truncation starts too: the forgery is named.
    assert_eq!(run(&entries[..3], vec![forged(9), forged(4)]).first_break, Some(forged(4)));
    // The whole chain present, a forged checkpoint past its end.
    let report = run(&entries, vec![forged(7)]);
    assert_eq!((report.first_break, report.head), (Some(forged(7)), Some(entries[4].head())));
}

#[test]
fn checkpoints_of_another_tenant_are_refused() {
    let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
    let checkpoint = Checkpoint::new(tenant(2), ChainHead { seq: 1, hash: GENESIS_HASH }, &clock).unwrap();
    assert!(matches!(ChainVerifier::new(tenant(1), &[checkpoint]), Err(audit::AuditError::CheckpointTenantMismatch)));
}

#[test]
fn the_verifier_stops_at_the_first_break() {
    let tenant = tenant(3);
    let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
    let actor = Actor::System { component: "test".into() };
    let events = (0..4).map(|_| audit::AuditEvent::new(tenant, actor.clone(), Action::AuthLogin, "session", &clock));
    let mut entries = crate::support::chain(events.collect());
    entries[1].hash[0] ^= 1;
    entries[3].hash[0] ^= 1;
    let mut verifier = ChainVerifier::new(tenant, &[]).unwrap();
    assert!(verifier.push(&entries[0]));
    assert!(!verifier.push(&entries[1]));
    assert!(!verifier.push(&entries[2]));
    assert!(!verifier.is_intact());
    let report = verifier.finish();
    assert_eq!(report.first_break, Some(Break { seq: 2, kind: BreakKind::HashMismatch }));
    assert_eq!(report.entries_checked, 2);
    assert_eq!(report.head, Some(entries[0].head()));
}
