//! Pure hashing throughput of the audit chain: entries chained (validated, encoded, hashed) and
//! entries verified per second. No I/O; this is the ceiling the Postgres adapter works under.

// A failing setup is a broken benchmark, not a runtime path: stop loudly.
#![allow(clippy::expect_used, reason = "benchmark setup")]

use audit::{Action, AuditEvent, ChainHead, ChainedEntry, Outcome, next_entry, verify_chain};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernel::{Actor, FixedClock, RequestId, Role, TenantId, UserId};
use serde_json::json;
use std::hint::black_box;
use time::macros::datetime;

const ENTRIES: u64 = 1_000;

fn events(tenant: TenantId) -> Vec<AuditEvent> {
    let clock = FixedClock::at(datetime!(2026-03-01 12:00 UTC));
    let actor = Actor::User { tenant, user: UserId::new(), role: Role::Therapist };
    (0..ENTRIES)
        .map(|i| {
            clock.advance(time::Duration::milliseconds(7));
            AuditEvent::new(tenant, actor.clone(), Action::PatientRead, "patient", &clock)
                .with_resource_id(UserId::new().to_string())
                .with_outcome(Outcome::Success)
                .with_request_id(RequestId::generate())
                .with_detail(json!({ "purpose": "treatment", "fields": ["diagnosis_code", "insurer"], "n": i }))
        })
        .collect()
}

fn chain(events: Vec<AuditEvent>) -> Vec<ChainedEntry> {
    let mut head = ChainHead::GENESIS;
    events
        .into_iter()
        .map(|event| {
            let entry = next_entry(&head, event).expect("valid event");
            head = entry.head();
            entry
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tenant = TenantId::new();
    let events = events(tenant);
    let entries = chain(events.clone());

    let mut group = c.benchmark_group("audit_chain");
    group.throughput(Throughput::Elements(ENTRIES));
    group.bench_function("append_1000", |b| b.iter(|| chain(black_box(events.clone()))));
    group.bench_function("verify_1000", |b| {
        b.iter(|| verify_chain(tenant, black_box(&entries), &[]).expect("no checkpoints"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
