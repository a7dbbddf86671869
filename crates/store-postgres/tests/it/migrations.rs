//! Data migrations, run again over rows written the way the code before them wrote.

use crate::support::seed_tenant;
use store_postgres::webhooks::{InboxEvent, record_events};
use store_postgres::{DbContext, begin};
use testkit::TestDb;

/// `20261123000011`: WhatsApp inbox keys stored raw (message ids encode the sender's number)
/// become digests, rewritten by the owner without a practice context, and the table forces
/// row-level security again after.
#[tokio::test]
async fn whatsapp_inbox_keys_stored_raw_are_rewritten_as_digests() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let event = |provider, event_key| InboxEvent {
        tenant,
        provider,
        event_key,
        event_type: "message",
        body_sha256: [1; 32],
        received_at: kernel::Clock::now(&kernel::SystemClock),
        detail: serde_json::json!({}),
    };
    let mut tx = begin(&db.app_pool, &DbContext::service(tenant)).await.unwrap();
    let rows = [
        event("whatsapp", "wamid.HBgLNDkxNTE="),
        event("whatsapp", "wamid.HBgLNDkxNTE=:read"),
        event("stripe", "evt_1"),
    ];
    record_events(&mut tx, &rows).await.unwrap();
    tx.commit().await.unwrap();

    let migration = include_str!("../../../../migrations/20261123000011_webhook_inbox_whatsapp_key_digests.sql");
    sqlx::raw_sql(sqlx::AssertSqlSafe(migration)).execute(&db.owner_pool).await.unwrap();

    let mut tx = begin(&db.app_pool, &DbContext::service(tenant)).await.unwrap();
    let mut keys: Vec<String> = sqlx::query_scalar("SELECT event_key FROM webhook_inbox WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    keys.sort();
    let digest =
        |key: &str| format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes())));
    let mut expected = vec![digest("wamid.HBgLNDkxNTE="), digest("wamid.HBgLNDkxNTE=:read"), "evt_1".to_owned()];
    expected.sort();
    assert_eq!(keys, expected);

    let forced: bool = sqlx::query_scalar("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'webhook_inbox'")
        .fetch_one(&db.owner_pool)
        .await
        .unwrap();
    assert!(forced, "the owner is bound by row-level security again");
}
