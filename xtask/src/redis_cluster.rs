//! Local Redis Clusters for the tests, built from `redis-server` and `redis-cli` as an operator
//! would: every node started with `cluster-enabled yes`, then `redis-cli --cluster create`.
//!
//! Two clusters are started, always (also when `REDIS_URL` names a single Redis):
//!
//! - `PRAXIS_TEST_REDIS_CLUSTER_URL`: three primaries, shared by every test that runs the Redis
//!   features against a cluster (each test under its own key prefix, as on the single Redis);
//! - `PRAXIS_TEST_REDIS_FAILOVER_CLUSTER_URL`: three primaries with one replica each, for the
//!   one test that stops a primary (it would disturb the others on the shared cluster).
//!
//! Both are `redis+cluster://` URLs naming every node as a seed, the form Praxis' configuration
//! takes. `cluster-node-timeout` is 1 s so a failover happens within a few seconds.

use crate::services::{free_port, redis_ping, redis_server_binary, wait_timeout};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLUSTER_URL_VAR: &str = "PRAXIS_TEST_REDIS_CLUSTER_URL";
pub const FAILOVER_CLUSTER_URL_VAR: &str = "PRAXIS_TEST_REDIS_FAILOVER_CLUSTER_URL";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster; its nodes stop when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    pub url: String,
    nodes: Vec<Child>,
}

impl RedisCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes under `data_dir/name` and joins
    /// them into one cluster.
    pub fn start(data_dir: &Path, name: &str, primaries: usize, replicas_per_primary: usize) -> Result<Self, String> {
        let redis_server = redis_server_binary()?;
        let redis_cli = redis_cli_binary(&redis_server)?;
        let mut cluster = Self { url: String::new(), nodes: Vec::new() };
        let mut ports = Vec::new();
        for index in 0..primaries * (1 + replicas_per_primary) {
            let dir = data_dir.join(format!("{name}-{index}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let (port, bus_port) = (free_port()?, free_port()?);
            let log = std::fs::File::create(dir.join("redis.log")).map_err(|e| e.to_string())?;
            let child = Command::new(&redis_server)
                .args(["--port", &port.to_string(), "--cluster-port", &bus_port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-config-file", "nodes.conf"])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start redis-server: {e}"))?;
            cluster.nodes.push(child);
            ports.push(port);
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for &port in &ports {
            while !redis_ping(port) {
                if Instant::now() > deadline {
                    return Err(format!("a {name} node did not answer PING within 60 s"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let addresses: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let output = Command::new(&redis_cli)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas_per_primary.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default()
            ));
        }
        // Every node must see every slot served, and every replica must have synced, before a
        // test may stop a primary and expect a promotion.
        for &port in &ports {
            loop {
                let info = cli_output(&redis_cli, port, &["CLUSTER", "INFO"]).unwrap_or_default();
                let replication = cli_output(&redis_cli, port, &["INFO", "replication"]).unwrap_or_default();
                let synced = !replication.contains("role:slave") || replication.contains("master_link_status:up");
                if info.contains("cluster_state:ok") && synced {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("the {name} cluster was not ready within 60 s"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster.url = format!("redis+cluster://{}", addresses.join(","));
        println!(
            "xtask: started a Redis Cluster ({primaries} primaries, {replicas_per_primary} replica(s) each) at {}",
            cluster.url
        );
        Ok(cluster)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
        }
        for node in &mut self.nodes {
            let _ = wait_timeout(node, Duration::from_secs(5));
        }
    }
}

/// `redis-cli`, next to `redis-server` (both come with Debian's `redis-server` package, via
/// `redis-tools`) or on PATH.
fn redis_cli_binary(redis_server: &Path) -> Result<PathBuf, String> {
    let beside = redis_server.with_file_name("redis-cli");
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("redis-cli")).find(|c| c.is_file()))
        .ok_or_else(|| "redis-cli not found (Debian/Ubuntu: apt-get install -y redis-tools)".to_owned())
}

fn cli_output(redis_cli: &Path, port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new(redis_cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
