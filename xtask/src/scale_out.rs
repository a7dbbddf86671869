//! The services of the scale-out tests, started for every `cargo xtask test` (also when
//! `DATABASE_URL` and `REDIS_URL` name servers): two Redis Clusters (`redis_cluster.rs`) and two
//! PgBouncers in transaction mode in front of the test Postgres (`pgbouncer.rs`), one with one
//! server connection per database, one with four.

use crate::pgbouncer::PgBouncer;
use crate::redis_cluster::RedisCluster;
use crate::services::{Services, url_parts};

/// Running scale-out services; they stop when this is dropped (before [`Services`], whose data
/// directory they use).
#[derive(Debug)]
pub struct ScaleOut {
    /// Three primaries, shared by the tests that run on a cluster.
    pub redis_cluster: RedisCluster,
    /// Three primaries with a replica each, for the failover test alone.
    pub redis_failover_cluster: RedisCluster,
    /// One server connection per database and role.
    pub pgbouncer: PgBouncer,
    /// Four server connections per database and role.
    pub pgbouncer_wide: PgBouncer,
}

impl ScaleOut {
    /// `role_password`: the test roles' password, which PgBouncer needs to log them in.
    pub fn start(services: &mut Services, role_password: &str) -> Result<Self, String> {
        let data_dir = services.data_dir("scale-out")?;
        let redis_cluster = RedisCluster::start(&data_dir, "cluster", 3, 0)?;
        let redis_failover_cluster = RedisCluster::start(&data_dir, "failover", 3, 1)?;
        let (postgres, _) = url_parts(&services.admin_url);
        let users = ["praxis_test_app", "praxis_test_owner"];
        let pgbouncer = PgBouncer::start(&data_dir, "pgbouncer", &postgres, &users, role_password, 1)?;
        let pgbouncer_wide = PgBouncer::start(&data_dir, "pgbouncer-wide", &postgres, &users, role_password, 4)?;
        Ok(Self { redis_cluster, redis_failover_cluster, pgbouncer, pgbouncer_wide })
    }

    /// The variables that name these services for the tests.
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            (crate::redis_cluster::CLUSTER_URL_VAR, self.redis_cluster.url.clone()),
            (crate::redis_cluster::FAILOVER_CLUSTER_URL_VAR, self.redis_failover_cluster.url.clone()),
            (crate::pgbouncer::ADDR_VAR, self.pgbouncer.addr.clone()),
            (crate::pgbouncer::WIDE_ADDR_VAR, self.pgbouncer_wide.addr.clone()),
        ]
    }
}
