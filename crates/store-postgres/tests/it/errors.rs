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

/// A server shutting down, restarting or refusing connections is `Unavailable` (503), whichever
/// way the error reaches the store: classified explicitly or passed on with `?`.
#[tokio::test]
async fn shutdown_and_connection_errors_are_unavailable_however_they_arrive() {
    let db = TestDb::new().await;
    for sqlstate in ["57P01", "57P02", "57P03", "08006", "53300"] {
        assert!(matches!(raise(&db, sqlstate).await, StoreError::Unavailable(_)), "{sqlstate}");
        let statement =
            format!("DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{sqlstate}'; END $$");
        let passed_on: StoreError =
            sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&db.app_pool).await.unwrap_err().into();
        assert!(matches!(passed_on, StoreError::Unavailable(_)), "{sqlstate} through From");
    }
}
