//! Filters and newest-first cursor pagination.

use crate::support::{append_alone, clock, read_event, seed_tenant, system_event};
use audit::{Action, AuditError, AuditFilter, AuditLog, Outcome, Page};
use kernel::{Actor, Clock, Role, TenantId, UserId};
use store_postgres::PgAuditLog;
use testkit::TestDb;

async fn all_pages(log: &PgAuditLog, tenant: TenantId, filter: &AuditFilter, limit: u32) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut cursor = None;
    loop {
        let page = log.query(tenant, filter, Page::new(cursor, limit).unwrap()).await.unwrap();
        assert!(page.entries.len() <= limit as usize);
        seqs.extend(page.entries.iter().map(|e| e.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return seqs,
        }
    }
}

#[tokio::test]
async fn filters_and_pages_match_the_reference_semantics() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = clock();
    let start = clock.now();
    // 1..=20 patient reads, 21..=25 consent expiries (5 failures among them: 22, 24).
    for i in 0..20 {
        append_alone(log.pool(), read_event(tenant, i % 4, &clock)).await.unwrap();
    }
    // The newest five stay unsealed: listings cover both kinds alike.
    store_postgres::audit::seal_pending(&db.app_pool, tenant).await.unwrap();
    for i in 0..5 {
        let outcome = if i % 2 == 1 { Outcome::Failure } else { Outcome::Success };
        append_alone(log.pool(), system_event(tenant, Action::ConsentExpired, outcome, &clock)).await.unwrap();
    }
    let mut tx = store_postgres::begin(&db.app_pool, &store_postgres::DbContext::tenant(tenant)).await.unwrap();
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM audit_entries ORDER BY id").fetch_all(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    let sealed = crate::support::sealed_chain(&db, tenant).await;
    assert_eq!(sealed.len(), 20);
    let listed = log.query(tenant, &AuditFilter::default(), Page::new(None, 200).unwrap()).await.unwrap().entries;
    let stored: Vec<audit::RecordedEntry> = listed.into_iter().rev().collect();
    assert_eq!(stored.iter().map(|e| e.id as i64).collect::<Vec<_>>(), ids);
    assert_eq!(stored.iter().filter(|e| e.is_sealed()).count(), 20);
    let mid = stored[9].event.occurred_at;

    let therapist = Actor::User { tenant, user: UserId::from_uuid(uuid::Uuid::from_u128(7)), role: Role::Therapist };
    let filters = [
        AuditFilter::default(),
        AuditFilter { action: Some(Action::ConsentExpired), ..AuditFilter::default() },
        AuditFilter { outcome: Some(Outcome::Failure), ..AuditFilter::default() },
        AuditFilter { actor: Some(therapist.clone()), ..AuditFilter::default() },
        // Same user id, other role: an exact actor match, so nothing.
        AuditFilter {
            actor: Some(Actor::User { tenant, user: UserId::from_uuid(uuid::Uuid::from_u128(7)), role: Role::Admin }),
            ..AuditFilter::default()
        },
        AuditFilter { actor: Some(Actor::System { component: "scheduler".into() }), ..AuditFilter::default() },
        AuditFilter {
            resource_type: Some("patient".into()),
            resource_id: Some("patient-2".into()),
            ..AuditFilter::default()
        },
        AuditFilter { from: Some(mid), ..AuditFilter::default() },
        AuditFilter { from: Some(start), to: Some(mid), ..AuditFilter::default() },
        AuditFilter {
            actor: Some(therapist),
            from: Some(mid),
            outcome: Some(Outcome::Success),
            ..AuditFilter::default()
        },
    ];
    for filter in &filters {
        let expected: Vec<u64> = stored.iter().rev().filter(|e| filter.matches(&e.event)).map(|e| e.id).collect();
        for limit in [1, 7, 200] {
            assert_eq!(all_pages(&log, tenant, filter, limit).await, expected, "{filter:?} limit {limit}");
        }
    }
    // Pages carry whole, verifiable entries.
    let newest = log.query(tenant, &AuditFilter::default(), Page::new(None, 1).unwrap()).await.unwrap();
    assert_eq!(newest.entries, vec![stored[24].clone()]);
    assert_eq!(newest.next_cursor, Some(stored[24].id));
}

#[tokio::test]
async fn page_size_and_time_range_are_bounded() {
    assert!(matches!(Page::new(None, 201), Err(AuditError::InvalidPageLimit { .. })));
    assert!(matches!(Page::new(None, 0), Err(AuditError::InvalidPageLimit { .. })));
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = clock();
    for i in 0..3 {
        append_alone(log.pool(), read_event(tenant, i, &clock)).await.unwrap();
    }
    let t = clock.now();
    let empty = AuditFilter { from: Some(t), to: Some(t), ..AuditFilter::default() };
    assert!(matches!(log.query(tenant, &empty, Page::default()).await, Err(AuditError::InvalidTimeRange)));
}
