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

/// `PRAXIS_TEST_REDIS_CLUSTER_URL`: the shared three-primary Redis Cluster `cargo xtask test`
/// starts (a `redis+cluster://` URL naming every node).
pub fn redis_cluster_url() -> String {
    required_var("PRAXIS_TEST_REDIS_CLUSTER_URL")
}

/// `PRAXIS_TEST_REDIS_FAILOVER_CLUSTER_URL`: a cluster of three primaries with one replica each,
/// for the one test that stops a primary.
pub fn redis_failover_cluster_url() -> String {
    required_var("PRAXIS_TEST_REDIS_FAILOVER_CLUSTER_URL")
}

/// `PRAXIS_TEST_PGBOUNCER_ADDR`: `host:port` of a PgBouncer in transaction mode (pool size 1) in
/// front of the test Postgres.
pub fn pgbouncer_addr() -> String {
    required_var("PRAXIS_TEST_PGBOUNCER_ADDR")
}

/// `PRAXIS_TEST_PGBOUNCER_WIDE_ADDR`: as [`pgbouncer_addr`], with four server connections per
/// database and role, so one client's consecutive exchanges may reach different ones.
pub fn pgbouncer_wide_addr() -> String {
    required_var("PRAXIS_TEST_PGBOUNCER_WIDE_ADDR")
}

/// Whether the server under test connects through PgBouncer (`PRAXIS_TEST_APP_VIA_POOLER=1`, set
/// by `cargo xtask test` for its scaled-out run).
pub fn app_via_pooler() -> bool {
    std::env::var("PRAXIS_TEST_APP_VIA_POOLER").is_ok_and(|v| v == "1")
}

/// The `database.prepared_statements` setting for the server under test: `unnamed` when it
/// connects through PgBouncer (Debian's 1.18 cannot track named statements), else `cached`.
pub fn prepared_statements_setting() -> &'static str {
    if app_via_pooler() { "unnamed" } else { "cached" }
}

fn required_var(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
        panic!("{name} is not set: run the tests with `cargo xtask test`, which starts the scale-out services")
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
    /// Connection URL of the runtime role (what `praxis serve` uses): through PgBouncer when
    /// [`app_via_pooler`], straight to Postgres otherwise. The pools below always connect
    /// straight to Postgres (tests' own queries use named prepared statements).
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
        let direct_app_url = url_for(&admin, APP_ROLE, &name);
        let owner_pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&owner_url)
            .await
            .expect("owner cannot connect to test database");
        store_postgres::migrate(&owner_pool).await.expect("migrations failed");
        let app_pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&direct_app_url)
            .await
            .expect("runtime role cannot connect to test database");
        let app_url = if app_via_pooler() { pooled_url(APP_ROLE, &name, &pgbouncer_addr()) } else { direct_app_url };
        Self { name, owner_url, app_url, owner_pool, app_pool }
    }

    /// The runtime role's URL for this database through PgBouncer (see [`pgbouncer_addr`]).
    pub fn pooled_app_url(&self) -> String {
        pooled_url(APP_ROLE, &self.name, &pgbouncer_addr())
    }

    /// As [`TestDb::pooled_app_url`], through the PgBouncer with four server connections
    /// ([`pgbouncer_wide_addr`]).
    pub fn wide_pooled_app_url(&self) -> String {
        pooled_url(APP_ROLE, &self.name, &pgbouncer_wide_addr())
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

fn pooled_url(user: &str, database: &str, pgbouncer: &str) -> String {
    let password = role_password().map(|p| format!(":{p}")).unwrap_or_default();
    format!("postgres://{user}{password}@{pgbouncer}/{database}")
}

fn url_for(admin: &PgConnectOptions, user: &str, database: &str) -> String {
    let password = role_password().map(|p| format!(":{p}")).unwrap_or_default();
    format!("postgres://{user}{password}@{}:{}/{database}", admin.get_host(), admin.get_port())
}

/// A Redis connection pool plus a key prefix no other test uses.
///
/// `url` may name a Redis Cluster (`redis+cluster://`, in `cargo xtask test`'s scaled-out run);
/// `pool` then connects to its first node only, so commands on keys must go through a
/// cluster-aware connection (`cache_redis::RedisStore::connection`).
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
        Self::on(&redis_url())
    }

    /// A prefix of its own on the Redis (or Redis Cluster) at `url`.
    pub fn on(url: &str) -> Self {
        let url = url.to_owned();
        let first_node = match url.split_once("+cluster://") {
            Some((scheme, nodes)) => {
                let (credentials, hosts) = nodes.rsplit_once('@').map_or(("", nodes), |(c, h)| (c, h));
                let first = hosts.split([',', '/', '?']).next().unwrap_or_default();
                let at = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
                format!("{scheme}://{at}{first}")
            }
            None => url.clone(),
        };
        let pool = deadpool_redis::Config::from_url(first_node)
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
