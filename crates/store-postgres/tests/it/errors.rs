//! How database errors are classed: a lost race is `Contention` (the API answers 503, try
//! again), not a generic `Database` error (500). Raised by a real Postgres.

use store_postgres::StoreError;
use testkit::TestDb;

async fn raise(db: &TestDb, sqlstate: &str) -> StoreError {
    let statement = format!("DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{sqlstate}'; END $$");
    let error = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&db.app_pool).await.unwrap_err();
    StoreError::classify(error)
}

#[tokio::test]
async fn deadlocks_and_serialization_failures_are_contention_other_errors_are_not() {
    let db = TestDb::new().await;
    assert!(matches!(raise(&db, "40P01").await, StoreError::Contention(_)), "deadlock_detected");
    assert!(matches!(raise(&db, "40001").await, StoreError::Contention(_)), "serialization_failure");
    assert!(matches!(raise(&db, "23505").await, StoreError::Database(_)), "unique_violation");
}
