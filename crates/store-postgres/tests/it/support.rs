//! Shared set-up for the audit tests.

use audit::{Action, AuditEvent, AuditFilter, ChainedEntry, CheckpointSigner, Outcome, Page};
use kernel::{Actor, FixedClock, RequestId, Role, TenantId, UserId};
use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};
use store_postgres::{DbContext, begin};
use testkit::TestDb;
use time::macros::datetime;

pub fn clock() -> FixedClock {
    FixedClock::at(datetime!(2026-03-01 09:00:00.123456789 UTC))
}

/// A practice row (audit_heads references tenants), created as the runtime role.
pub async fn seed_tenant(db: &TestDb) -> TenantId {
    let tenant = TenantId::new();
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'Practice')")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tenant
}

/// A patient of the practice `context` works for (its name's ciphertext is opaque bytes to the
/// store), inserted in that context, as the runtime role.
pub async fn seed_patient(db: &TestDb, context: &DbContext, clock: &FixedClock) -> kernel::PatientId {
    use kernel::Clock;
    let patient = kernel::PatientId::from_uuid(uuid::Uuid::now_v7());
    let row = store_postgres::patients::NewPatientRow {
        id: patient,
        tenant: context.tenant.unwrap(),
        dek_generation: 1,
        assigned_therapist: None,
        fields: [(patients::PatientField::Name, vec![9; 60])].into_iter().collect(),
        email_index: None,
        phone_index: None,
        created_at: clock.now(),
    };
    let mut tx = begin(&db.app_pool, context).await.unwrap();
    store_postgres::patients::insert(&mut tx, &row).await.unwrap();
    tx.commit().await.unwrap();
    patient
}

/// A typical entry: a therapist reading patient `n`.
pub fn read_event(tenant: TenantId, n: u64, clock: &FixedClock) -> AuditEvent {
    clock.advance(time::Duration::milliseconds(10));
    let actor = Actor::User { tenant, user: UserId::from_uuid(uuid::Uuid::from_u128(7)), role: Role::Therapist };
    AuditEvent::new(tenant, actor, Action::PatientRead, "patient", clock)
        .with_resource_id(format!("patient-{n}"))
        .with_request_id(RequestId::generate())
        .with_detail(json!({ "n": n, "fields": ["diagnosis_code"], "purpose": "treatment" }))
}

pub fn system_event(tenant: TenantId, action: Action, outcome: Outcome, clock: &FixedClock) -> AuditEvent {
    clock.advance(time::Duration::milliseconds(10));
    AuditEvent::new(tenant, Actor::System { component: "scheduler".into() }, action, "consent", clock)
        .with_outcome(outcome)
}

/// Records `n` read events in their own transactions, as the runtime role, then seals them as
/// the sealer would; returns them as sealed.
pub async fn append_reads(db: &TestDb, tenant: TenantId, n: u64, clock: &FixedClock) -> Vec<ChainedEntry> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
        ids.push(store_postgres::audit::append(&mut tx, read_event(tenant, i, clock)).await.unwrap());
        tx.commit().await.unwrap();
    }
    store_postgres::audit::seal_pending(&db.app_pool, tenant).await.unwrap();
    sealed_chain(db, tenant).await.into_iter().filter(|(id, _)| ids.contains(id)).map(|(_, entry)| entry).collect()
}

/// Every entry of `tenant` that is sealed, with its id, in chain order (read as the owner).
pub async fn sealed_chain(db: &TestDb, tenant: TenantId) -> Vec<(u64, ChainedEntry)> {
    let log = store_postgres::PgAuditLog::new(db.owner_pool.clone());
    let mut sealed = Vec::new();
    let mut cursor = None;
    loop {
        let page = log.query_entries(tenant, &AuditFilter::default(), Page::new(cursor, 200).unwrap()).await.unwrap();
        for entry in page.entries {
            if let Some(link) = entry.link {
                let chained =
                    ChainedEntry { seq: link.seq, prev_hash: link.prev_hash, hash: link.hash, event: entry.event };
                sealed.push((entry.id, chained));
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    sealed.sort_by_key(|(_, entry)| entry.seq);
    sealed
}

/// Records `event` in a transaction of its own, as a change that records nothing else would;
/// returns its id.
pub async fn append_alone(pool: &PgPool, event: AuditEvent) -> Result<u64, store_postgres::AuditStoreError> {
    let mut tx = begin(pool, &DbContext::tenant(event.tenant)).await?;
    let entry = store_postgres::audit::append(&mut tx, event).await?;
    tx.commit().await.map_err(store_postgres::StoreError::classify)?;
    Ok(entry)
}

/// `sql` run as the owner role in the tenant's context.
pub async fn as_owner(db: &TestDb, tenant: TenantId, sql: &str) -> Result<u64, sqlx::Error> {
    run_in_context(&db.owner_pool, tenant, sql).await
}

pub async fn run_in_context(pool: &PgPool, tenant: TenantId, sql: &str) -> Result<u64, sqlx::Error> {
    let mut tx = begin(pool, &DbContext::tenant(tenant)).await.unwrap();
    let done = sqlx::query(AssertSqlSafe(sql.to_owned())).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Simulates an attacker holding the owner's credentials: the owner may disable the append-only
/// trigger on its own table (ALTER TABLE), edit, and re-enable it. The schema cannot stop that;
/// the chain and checkpoints must expose it.
pub async fn tamper(db: &TestDb, tenant: TenantId, sql: &str) -> u64 {
    let mut tx = begin(&db.owner_pool, &DbContext::tenant(tenant)).await.unwrap();
    sqlx::query("ALTER TABLE audit_entries DISABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    let done = sqlx::query(AssertSqlSafe(sql.to_owned())).execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE audit_entries ENABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    done.rows_affected()
}

/// Stored seqs of `tenant`, ascending (read as the owner, in the tenant's context).
pub async fn stored_seqs(db: &TestDb, tenant: TenantId) -> Vec<i64> {
    let mut tx = begin(&db.owner_pool, &DbContext::tenant(tenant)).await.unwrap();
    let seqs = sqlx::query_scalar("SELECT seq FROM audit_entries WHERE seq IS NOT NULL ORDER BY seq")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    seqs
}

/// A keyed (FNV-1a, not cryptographic) test signer: enough to exercise the port's plumbing.
#[derive(Debug)]
pub struct TestSigner(pub &'static [u8]);

impl TestSigner {
    fn mac(&self, tenant: TenantId, message: &[u8]) -> Vec<u8> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.0.iter().chain(tenant.as_uuid().as_bytes()).chain(message) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h.to_be_bytes().to_vec()
    }
}

#[async_trait::async_trait]
impl CheckpointSigner for TestSigner {
    async fn sign(&self, tenant: TenantId, message: &[u8]) -> Result<Vec<u8>, audit::AuditError> {
        Ok(self.mac(tenant, message))
    }
    async fn verify(&self, tenant: TenantId, message: &[u8], signature: &[u8]) -> Result<bool, audit::AuditError> {
        Ok(self.mac(tenant, message) == signature)
    }
}
