//! A PgBouncer in transaction mode in front of the test Postgres (Debian's `pgbouncer` package,
//! installed with apt when missing, like Postgres and Redis).
//!
//! Tests find it in `PRAXIS_TEST_PGBOUNCER_ADDR` (`127.0.0.1:port`): every database of the test
//! Postgres is reachable through it under its own name (`* =` in `[databases]`), for the test
//! roles, whose password (`PRAXIS_TEST_ROLE_PASSWORD`) is in its auth file. The settings are the
//! ones docs/deployment.md gives operators, with the smallest pool: one server connection per
//! database and role, so every client of a test's database shares one server connection, and
//! any session state one client left behind would reach the next.
//!
//! A second one, `PRAXIS_TEST_PGBOUNCER_WIDE_ADDR`, has four server connections per database and
//! role, as a production pooler would: there consecutive exchanges of one client may reach two
//! server connections, so a statement whose parse and execution are two exchanges (unnamed
//! statements outside a transaction) fails, and the tests can show that none is sent so.

use crate::services::{find_binary_or_install, free_port, unprivileged_user_if_root, wait_timeout};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADDR_VAR: &str = "PRAXIS_TEST_PGBOUNCER_ADDR";
/// Where the tests find the PgBouncer with several server connections per database.
pub const WIDE_ADDR_VAR: &str = "PRAXIS_TEST_PGBOUNCER_WIDE_ADDR";

/// A running PgBouncer; it stops when dropped.
#[derive(Debug)]
pub struct PgBouncer {
    pub addr: String,
    child: Child,
}

impl PgBouncer {
    /// `postgres`: the server's `host:port`; `users`: the login roles and their password;
    /// `pool_size`: server connections per database and role. `name` names its directory under
    /// `data_dir`.
    pub fn start(
        data_dir: &Path,
        name: &str,
        postgres: &str,
        users: &[&str],
        password: &str,
        pool_size: u32,
    ) -> Result<Self, String> {
        let binary = find_binary_or_install("pgbouncer", "pgbouncer")?;
        let dir = data_dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (host, port) = postgres.rsplit_once(':').unwrap_or((postgres, "5432"));
        let listen_port = free_port()?;
        let auth_file = dir.join("userlist.txt");
        let mut users_text = String::new();
        for user in users {
            users_text.push_str(&format!("\"{user}\" \"{password}\"\n"));
        }
        write_private(&auth_file, &users_text)?;
        let config = format!(
            "[databases]\n\
             * = host={host} port={port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {listen_port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {auth}\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 4000\n\
             server_reset_query =\n\
             server_check_delay = 0\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            auth = auth_file.display(),
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        let config_file = dir.join("pgbouncer.ini");
        write_private(&config_file, &config)?;
        let mut command = Command::new(binary);
        // PgBouncer refuses to run as root.
        if let Some((uid, gid)) = unprivileged_user_if_root(&dir)? {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let mut child = command
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start pgbouncer: {e}"))?;
        let addr = format!("127.0.0.1:{listen_port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "pgbouncer exited during start-up ({status}); see {}",
                    dir.join("pgbouncer.log").display()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("pgbouncer did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("xtask: started PgBouncer (transaction mode, pool size {pool_size}) on {addr} in front of {postgres}");
        Ok(Self { addr, child })
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(5));
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
