//! The use cases over a test database, for this crate's tests that need real Postgres: an
//! in-memory KMS (a unit-test fake: what is tested here is the use case, not a KMS adapter), the
//! default policies, and no login-failure counter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::webhook_ingest::WebhookIngest;
use crate::{Dependencies, Services};
use kernel::{Clock, Role, SharedClock, SystemClock, TenantId, UserId};
use sqlx::PgPool;
use std::sync::Arc;
use store_postgres::{DbContext, PgAuditLog};

/// The use cases on `db` (the runtime role's pool), with `webhook_ingest` if the test ingests.
pub fn on(db: PgPool, webhook_ingest: Option<WebhookIngest>) -> Services {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let kms = crypto::InMemoryKms::new("app-test").unwrap();
    Services::new(Dependencies {
        audit_log: PgAuditLog::new(db.clone()),
        db,
        clock: clock.clone(),
        hasher: Arc::new(identity::PasswordHasher::new(identity::Argon2Params::default()).unwrap()),
        login_failures: None,
        login_limit: identity::Limit::per_minute(5),
        session_policy: identity::SessionPolicy::default(),
        keyring: Arc::new(crypto::Keyring::new(Arc::new(kms), []).unwrap()),
        dek_cache: Arc::new(crypto::DekCache::new(SharedClock(clock), crypto::DekCacheConfig::default())),
        practice_keys: Arc::default(),
        booking_policy: scheduling::BookingPolicy::default(),
        reminder_policy: scheduling::ReminderPolicy::default(),
        webhook_ingest,
    })
}

/// A new practice named `name` in `db`, as the runtime role.
pub async fn practice(db: &PgPool, name: &str) -> TenantId {
    let tenant = TenantId::new();
    let mut tx = store_postgres::begin(db, &DbContext::user(tenant, UserId::new(), Role::Admin)).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(tenant.as_uuid())
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tenant
}
