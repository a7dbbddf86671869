//! Audit append throughput against a real Postgres (`PRAXIS_TEST_DATABASE_URL`, a fresh testkit
//! database), as the runtime role, one transaction per append:
//!
//! * `one_tenant_sequential`: one task appending for one practice, back to back;
//! * `one_tenant_concurrent`: 8 tasks appending for one practice;
//! * `many_tenants_concurrent`: 8 tasks appending for 8 practices.
//!
//! Appending takes no per-practice lock (entries are sealed into the chain later, by the sealer,
//! which this bench does not run), so the last two should be close: a gap between them would be
//! a per-practice serialisation come back. Run with
//! `cargo bench -p store-postgres --bench audit_append`.

// A failing setup is a broken benchmark, not a runtime path; the summary is the point of a bench.
#![allow(clippy::expect_used, clippy::print_stdout, reason = "benchmark setup and report")]

use audit::{Action, AuditEvent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernel::{Actor, FixedClock, RequestId, Role, TenantId, UserId};
use serde_json::json;
use std::time::{Duration, Instant};
use store_postgres::{DbContext, PgAuditLog, begin};
use testkit::TestDb;
use time::macros::datetime;
use tokio::runtime::Runtime;

/// Concurrent tasks; testkit's runtime pool has 8 connections.
const TASKS: u64 = 8;

fn event(tenant: TenantId, clock: &FixedClock) -> AuditEvent {
    let actor = Actor::User { tenant, user: UserId::from_uuid(uuid::Uuid::from_u128(1)), role: Role::Therapist };
    AuditEvent::new(tenant, actor, Action::PatientRead, "patient", clock)
        .with_resource_id("0190f0a4-1b2c-7d3e-8f40-123456789abc")
        .with_request_id(RequestId::generate())
        .with_detail(json!({ "fields": ["diagnosis_code"], "purpose": "treatment" }))
}

async fn seed_tenant(db: &TestDb) -> TenantId {
    let tenant = TenantId::new();
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.expect("begin");
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'Bench')")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .expect("seed tenant");
    tx.commit().await.expect("commit");
    tenant
}

/// Appends `iters` entries split over one task per tenant in `tenants` (a tenant may repeat).
async fn run(log: &PgAuditLog, tenants: &[TenantId], clock: &FixedClock, iters: u64) -> Duration {
    let start = Instant::now();
    let per_task = iters.div_ceil(tenants.len() as u64);
    let mut handles = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let count = per_task.min(iters.saturating_sub(per_task * i as u64));
        let (log, tenant, clock) = (log.clone(), *tenant, clock.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..count {
                let mut tx = begin(log.pool(), &DbContext::tenant(tenant)).await.expect("begin");
                store_postgres::audit::append(&mut tx, event(tenant, &clock)).await.expect("append");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    start.elapsed()
}

fn appends(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let db = rt.block_on(TestDb::new());
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = FixedClock::at(datetime!(2026-03-01 12:00 UTC));
    let one = rt.block_on(seed_tenant(&db));
    let mut many = Vec::new();
    for _ in 0..TASKS {
        many.push(rt.block_on(seed_tenant(&db)));
    }
    let cases: [(&str, Vec<TenantId>); 3] = [
        ("one_tenant_sequential", vec![one]),
        ("one_tenant_concurrent", vec![one; TASKS as usize]),
        ("many_tenants_concurrent", many),
    ];

    let mut totals = Vec::new();
    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(1)).sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, tenants) in &cases {
        let (mut entries, mut elapsed) = (0u64, Duration::ZERO);
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let took = rt.block_on(run(&log, tenants, &clock, iters));
                entries += iters;
                elapsed += took;
                took
            });
        });
        totals.push((*name, entries, elapsed));
    }
    group.finish();

    println!("\naudit append throughput (warm-up included, one transaction per entry):");
    for (name, entries, elapsed) in totals {
        let rate = entries as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
        println!("  {name:<26} {rate:>9.0} entries/s  ({entries} entries in {:.2} s)", elapsed.as_secs_f64());
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);
