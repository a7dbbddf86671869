//! Real services for integration tests.
//!
//! `cargo xtask test` starts (or reuses) a Postgres and a Redis and passes them in
//! `PRAXIS_TEST_DATABASE_URL` (a role that may create databases and roles) and
//! `PRAXIS_TEST_REDIS_URL`. Each [`TestDb`] is a new database, migrated by the owner role exactly
//! as `praxis migrate` does, with a pool for the owner and one for the runtime role the server
//! uses, so tests see row-level security as production does.

// Test support fails loudly: a missing service is a broken test set-up, not a condition to handle.
#![allow(clippy::expect_used, clippy::panic)]

pub mod tls;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};
use std::str::FromStr;

/// Login role that owns test databases and runs migrations (like a deployment's migration user).
pub const OWNER_ROLE: &str = "praxis_test_owner";
/// Login role the server connects as: member of `praxis_runtime`, nothing more.
pub const APP_ROLE: &str = "praxis_test_app";

fn admin_url() -> String {
    std::env::var("PRAXIS_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("PRAXIS_TEST_DATABASE_URL is not set: run the tests with `cargo xtask test`, which provides Postgres and Redis")
    })
}

/// Redis URL for tests.
pub fn redis_url() -> String {
    std::env::var("PRAXIS_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "PRAXIS_TEST_REDIS_URL is not set: run the tests with `cargo xtask test`, which provides Postgres and Redis"
        )
    })
}

fn role_password() -> Option<String> {
    std::env::var("PRAXIS_TEST_ROLE_PASSWORD").ok().filter(|p| !p.is_empty())
}

/// A fresh, migrated database.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// Connection URL of the owner role (runs migrations; still subject to FORCEd RLS).
    pub owner_url: String,
    /// Connection URL of the runtime role (what `praxis serve` uses).
    pub app_url: String,
    pub owner_pool: PgPool,
    pub app_pool: PgPool,
}

impl TestDb {
    /// Ends every session connected to this database, as the administrator: each backend gets
    /// what a fast shutdown or a failover sends it (SQLSTATE 57P01, then a closed connection).
    /// Returns how many sessions were ended.
    pub async fn terminate_connections(&self) -> u64 {
        let mut admin = PgConnection::connect(&admin_url()).await.expect("cannot connect as the test administrator");
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&mut admin)
        .await
        .expect("pg_terminate_backend failed");
        admin.close().await.ok();
        u64::try_from(ended).unwrap_or(0)
    }

    pub async fn new() -> Self {
        let admin =
            PgConnectOptions::from_str(&admin_url()).expect("PRAXIS_TEST_DATABASE_URL is not a valid Postgres URL");
        let mut conn = PgConnection::connect_with(&admin).await.expect("cannot connect to the test Postgres");
        ensure_roles(&mut conn).await;
        let name = format!("praxis_test_{}", uuid::Uuid::new_v4().simple());
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}")))
            .await
            .expect("cannot create test database");
        conn.close().await.ok();

        let owner_url = url_for(&admin, OWNER_ROLE, &name);
        let app_url = url_for(&admin, APP_ROLE, &name);
        let owner_pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&owner_url)
            .await
            .expect("owner cannot connect to test database");
        store_postgres::migrate(&owner_pool).await.expect("migrations failed");
        let app_pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&app_url)
            .await
            .expect("runtime role cannot connect to test database");
        Self { name, owner_url, app_url, owner_pool, app_pool }
    }

    /// A connection of the test server's superuser to this database: it bypasses row-level
    /// security, so it sees every row, as a DBA, a stolen disk or a leaked backup would.
    /// For tests that check what is stored, never for what the application may see.
    pub async fn superuser_pool(&self) -> PgPool {
        let admin =
            PgConnectOptions::from_str(&admin_url()).expect("PRAXIS_TEST_DATABASE_URL is not a valid Postgres URL");
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin.database(&self.name))
            .await
            .expect("superuser cannot connect to the test database")
    }
}

async fn ensure_roles(conn: &mut PgConnection) {
    // Roles are cluster-wide and tests run in parallel: serialise their creation.
    conn.execute("SELECT pg_advisory_lock(7400132)").await.expect("advisory lock");
    let password = role_password().map(|p| format!(" PASSWORD '{}'", p.replace('\'', "''"))).unwrap_or_default();
    let statements = [
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'praxis_runtime') THEN \
         CREATE ROLE praxis_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF; END $$"
            .to_owned(),
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN \
             CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE; END IF; END $$"
        ),
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN \
             CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE IN ROLE praxis_runtime; END IF; END $$"
        ),
        format!("ALTER ROLE {OWNER_ROLE}{password}"),
        format!("ALTER ROLE {APP_ROLE}{password}"),
    ];
    for statement in &statements {
        if let Err(error) = conn.execute(AssertSqlSafe(statement.as_str())).await {
            conn.execute("SELECT pg_advisory_unlock(7400132)").await.ok();
            panic!("cannot prepare test roles: {error}");
        }
    }
    conn.execute("SELECT pg_advisory_unlock(7400132)").await.expect("advisory unlock");
}

fn url_for(admin: &PgConnectOptions, user: &str, database: &str) -> String {
    let password = role_password().map(|p| format!(":{p}")).unwrap_or_default();
    format!("postgres://{user}{password}@{}:{}/{database}", admin.get_host(), admin.get_port())
}

/// A Redis connection pool plus a key prefix no other test uses.
#[derive(Clone)]
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
    pub pool: deadpool_redis::Pool,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis").field("url", &self.url).field("prefix", &self.prefix).finish()
    }
}

impl TestRedis {
    pub fn new() -> Self {
        let url = redis_url();
        let pool = deadpool_redis::Config::from_url(url.clone())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("invalid PRAXIS_TEST_REDIS_URL");
        let prefix = format!("praxis-test:{}:", uuid::Uuid::new_v4().simple());
        Self { url, prefix, pool }
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}
