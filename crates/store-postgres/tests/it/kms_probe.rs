//! `kms_probe_keys()`: the start-up check's view of the newest stored keys, as the runtime role.

use crate::support::seed_tenant;
use kernel::{PatientId, TenantId};
use store_postgres::keys::{NewPatientKey, probe_keys};
use store_postgres::{DbContext, begin};
use testkit::TestDb;
use time::{Duration, OffsetDateTime};

async fn store_key(db: &TestDb, tenant: TenantId, kek_version: &str, created_at: OffsetDateTime) -> PatientId {
    let patient = PatientId::new();
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    let key = NewPatientKey {
        tenant,
        patient,
        generation: 1,
        kek_id: "local".into(),
        kek_version: kek_version.into(),
        wrapped_dek: vec![7; 60],
        created_at,
    };
    store_postgres::keys::insert(&mut tx, &key).await.unwrap();
    tx.commit().await.unwrap();
    patient
}

#[tokio::test]
async fn the_runtime_role_sees_the_newest_key_of_all_practices_through_the_probe_only() {
    let db = TestDb::new().await;
    assert!(probe_keys(&db.app_pool).await.unwrap().is_empty(), "an empty database has nothing to try");

    let (a, b) = (seed_tenant(&db).await, seed_tenant(&db).await);
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    store_key(&db, a, "1", now - Duration::hours(2)).await;
    store_key(&db, a, "2", now - Duration::hours(1)).await;
    let newest = store_key(&db, b, "2", now).await;

    // Outside any practice's context, as `praxis serve` runs it.
    let found = probe_keys(&db.app_pool).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let key = &found[0];
    assert_eq!((key.purpose.as_str(), key.tenant, key.patient), ("patient-data", b, Some(newest)));
    assert_eq!((key.kek_version.as_str(), key.under_same_kek, key.stored), ("2", 2, 3));

    // The policy that admits the probe's query does not admit the runtime role, even with the
    // setting switched on by hand: it still sees only its own practice's keys.
    let mut tx = begin(&db.app_pool, &DbContext::tenant(a)).await.unwrap();
    sqlx::query("SELECT set_config('praxis.kms_probe', 'on', true)").execute(&mut *tx).await.unwrap();
    let visible: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM patient_keys").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(visible, vec![*a.as_uuid()]);
    tx.commit().await.unwrap();

    // A practice's context may not call it at all: only the workers' scan context may.
    let mut tx = begin(&db.app_pool, &DbContext::tenant(a)).await.unwrap();
    let refused = sqlx::query("SELECT * FROM kms_probe_keys()").execute(&mut *tx).await.unwrap_err().to_string();
    assert!(refused.contains("scan context only"), "{refused}");
    tx.rollback().await.unwrap();

    // And the setting does not outlive the function's call.
    let mut tx = begin(&db.app_pool, &DbContext::practice_scan()).await.unwrap();
    sqlx::query("SELECT * FROM kms_probe_keys()").execute(&mut *tx).await.unwrap();
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('praxis.kms_probe', true)").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(setting.as_deref(), Some("off"));
    tx.commit().await.unwrap();

    // Nobody but the runtime role (and the owner) may call it.
    let public: bool = sqlx::query_scalar("SELECT has_function_privilege('public', 'kms_probe_keys()', 'EXECUTE')")
        .fetch_one(&db.owner_pool)
        .await
        .unwrap();
    assert!(!public);
}
