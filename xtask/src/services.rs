//! Postgres and Redis for development and tests.
//!
//! When `DATABASE_URL` / `REDIS_URL` are set they are used as they are (the database URL must be a
//! role that may create roles and databases). Otherwise a throwaway Postgres and Redis are started
//! from the system's binaries on free ports, with their data under `target/dev-services/`, and
//! removed when the command ends. Postgres refuses to run as root, so under root it runs as the
//! `postgres` system user (created with `useradd` if absent).

use crate::{random_hex, target_dir};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const DEMO_PRACTICE: &str = "Demo Practice";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Postgres and Redis, either given or started here.
#[derive(Debug)]
pub struct Services {
    /// A role that may create roles and databases.
    pub admin_url: String,
    pub redis_url: String,
    /// AWS KMS API (moto in server mode) for the kms-aws adapter's end-to-end tests.
    pub aws_kms_endpoint: Option<String>,
    /// A Vault-compatible server (OpenBao) for the kms-vault adapter's end-to-end tests.
    pub vault: Option<crate::openbao::TestVault>,
    postgres: Option<Child>,
    redis: Option<Child>,
    moto: Option<Child>,
    data_dir: Option<PathBuf>,
}

impl Services {
    pub fn start(purpose: &str) -> Result<Self, String> {
        let given_database = std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty());
        let given_redis = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty());
        let mut services = Services {
            admin_url: given_database.clone().unwrap_or_default(),
            redis_url: given_redis.clone().unwrap_or_default(),
            aws_kms_endpoint: None,
            vault: None,
            postgres: None,
            redis: None,
            moto: None,
            data_dir: None,
        };
        if given_database.is_some() && given_redis.is_some() {
            return Ok(services);
        }
        let data_dir = target_dir().join("dev-services").join(format!("{purpose}-{}", std::process::id()));
        std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        services.data_dir = Some(data_dir.clone());
        if given_database.is_none() {
            let (child, url) = start_postgres(&data_dir)?;
            services.postgres = Some(child);
            services.admin_url = url;
        }
        if given_redis.is_none() {
            let (child, url) = start_redis(&data_dir)?;
            services.redis = Some(child);
            services.redis_url = url;
        }
        Ok(services)
    }

    /// Starts moto (a local AWS KMS API) unless `PRAXIS_TEST_AWS_KMS_ENDPOINT` names one.
    pub fn start_aws_kms(&mut self) -> Result<(), String> {
        if let Some(endpoint) = std::env::var(crate::moto::ENDPOINT_VAR).ok().filter(|v| !v.is_empty()) {
            self.aws_kms_endpoint = Some(endpoint);
            return Ok(());
        }
        let data_dir = self.data_dir("moto")?;
        let (child, endpoint) = crate::moto::start_moto(&data_dir)?;
        self.moto = Some(child);
        self.aws_kms_endpoint = Some(endpoint);
        Ok(())
    }

    /// Starts OpenBao in dev mode unless `PRAXIS_TEST_VAULT_ADDR` and `PRAXIS_TEST_VAULT_TOKEN`
    /// name a server (see `openbao.rs`).
    pub fn start_vault(&mut self) -> Result<(), String> {
        let data_dir = self.data_dir("openbao")?;
        self.vault = Some(crate::openbao::TestVault::start(&data_dir)?);
        Ok(())
    }

    /// This run's directory under `target/dev-services/`, created by the first service that
    /// needs one (named after it when Postgres and Redis were given).
    pub(crate) fn data_dir(&mut self, purpose: &str) -> Result<PathBuf, String> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        let dir = target_dir().join("dev-services").join(format!("{purpose}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        self.data_dir = Some(dir.clone());
        Ok(dir)
    }

    /// Whether Postgres is a throwaway one started here (dropped with everything in it).
    pub fn runs_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub fn admin_url_for_display(&self) -> String {
        mask_password(&self.admin_url)
    }

    /// Test databases are dropped with a throwaway cluster; on a given server, drop them here.
    pub fn drop_test_databases(&self) {
        if self.postgres.is_some() {
            return;
        }
        let listing =
            psql_output(&self.admin_url, "SELECT datname FROM pg_database WHERE datname LIKE 'praxis\\_test\\_%'");
        for name in listing.unwrap_or_default().lines().map(str::trim).filter(|n| !n.is_empty()) {
            let _ = psql(&self.admin_url, &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        drop(self.vault.take());
        if let Some(mut moto) = self.moto.take() {
            let _ = moto.kill();
            let _ = moto.wait();
        }
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        if let Some(mut postgres) = self.postgres.take() {
            // SIGINT is Postgres' "fast shutdown": roll back and exit cleanly.
            signal(postgres.id(), "INT");
            if wait_timeout(&mut postgres, Duration::from_secs(15)).is_none() {
                let _ = postgres.kill();
                let _ = postgres.wait();
            }
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The praxis database and its two login roles, made ready on the admin connection.
#[derive(Debug)]
pub struct AppDatabase {
    pub owner_url: String,
    pub app_url: String,
    admin_url: String,
    database: String,
}

impl AppDatabase {
    pub fn owner_url_for_display(&self) -> String {
        mask_password(&self.owner_url)
    }

    pub fn has_demo_practice(&self) -> Result<bool, String> {
        let url = with_database(&self.admin_url, &self.database);
        let count = psql_output(&url, &format!("SELECT count(*) FROM tenants WHERE name = '{DEMO_PRACTICE}'"))?;
        Ok(count.trim() != "0")
    }
}

/// Creates (idempotently) the owner role, the runtime group role, the runtime login role and the
/// database, exactly as docs/operations.md tells an operator to.
pub fn prepare_app_database(admin_url: &str, database: &str) -> Result<AppDatabase, String> {
    let owner_password = random_hex(16)?;
    let app_password = random_hex(16)?;
    let statements = [
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'praxis_runtime') THEN \
         CREATE ROLE praxis_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF; END $$"
            .to_owned(),
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'praxis_owner') THEN \
         CREATE ROLE praxis_owner LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE; END IF; END $$"
            .to_owned(),
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'praxis_app') THEN \
         CREATE ROLE praxis_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE IN ROLE praxis_runtime; END IF; END $$"
            .to_owned(),
        format!("ALTER ROLE praxis_owner PASSWORD '{owner_password}'"),
        format!("ALTER ROLE praxis_app PASSWORD '{app_password}'"),
    ];
    for statement in &statements {
        psql(admin_url, statement)?;
    }
    let exists = psql_output(admin_url, &format!("SELECT count(*) FROM pg_database WHERE datname = '{database}'"))?;
    if exists.trim() == "0" {
        psql(admin_url, &format!("CREATE DATABASE {database} OWNER praxis_owner"))?;
    }
    Ok(AppDatabase {
        owner_url: with_credentials(admin_url, "praxis_owner", &owner_password, database),
        app_url: with_credentials(admin_url, "praxis_app", &app_password, database),
        admin_url: admin_url.to_owned(),
        database: database.to_owned(),
    })
}

fn start_postgres(data_dir: &Path) -> Result<(Child, String), String> {
    let initdb = find_postgres_binary("initdb")?;
    let postgres = find_postgres_binary("postgres")?;
    let cluster = data_dir.join("postgres");
    let socket_dir = data_dir.join("pg-socket");
    std::fs::create_dir_all(&socket_dir).map_err(|e| e.to_string())?;
    let run_as = unprivileged_user_if_root(data_dir)?;

    let mut init = Command::new(&initdb);
    init.args(["--username=postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "-D"])
        .arg(&cluster)
        .stdout(Stdio::null());
    if let Some((uid, gid)) = run_as {
        std::os::unix::process::CommandExt::uid(&mut init, uid);
        std::os::unix::process::CommandExt::gid(&mut init, gid);
    }
    let status = init.status().map_err(|e| format!("cannot run initdb: {e}"))?;
    if !status.success() {
        return Err(format!("initdb failed ({status})"));
    }

    let port = free_port()?;
    let log = std::fs::File::create(data_dir.join("postgres.log")).map_err(|e| e.to_string())?;
    if let Some((uid, _)) = run_as {
        chown(&data_dir.join("postgres.log"), uid)?;
    }
    let mut server = Command::new(&postgres);
    server
        .arg("-D")
        .arg(&cluster)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&socket_dir)
        // Throwaway data: durability off for speed; loopback only.
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if let Some((uid, gid)) = run_as {
        std::os::unix::process::CommandExt::uid(&mut server, uid);
        std::os::unix::process::CommandExt::gid(&mut server, gid);
    }
    let mut child = server.spawn().map_err(|e| format!("cannot start postgres: {e}"))?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if psql_output(&url, "SELECT 1").is_ok() {
            println!("xtask: started a throwaway Postgres on 127.0.0.1:{port} (data in {})", cluster.display());
            return Ok((child, url));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "postgres exited during start-up ({status}); see {}",
                data_dir.join("postgres.log").display()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("postgres did not accept connections within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The variable that names the `redis-server` binary for tests that run a Redis of their own
/// (cache-redis's TLS tests).
pub const REDIS_SERVER_VAR: &str = "PRAXIS_TEST_REDIS_SERVER";

/// The `redis-server` binary (installed when missing and allowed, as for the services).
pub fn redis_server_binary() -> Result<PathBuf, String> {
    find_binary("redis-server").ok_or_else(|| install_hint("redis-server", "redis-server"))
}

fn start_redis(data_dir: &Path) -> Result<(Child, String), String> {
    let redis_server = redis_server_binary()?;
    let port = free_port()?;
    let log = std::fs::File::create(data_dir.join("redis.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(redis_server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if redis_ping(port) {
            println!("xtask: started a throwaway Redis on 127.0.0.1:{port}");
            return Ok((child, format!("redis://127.0.0.1:{port}")));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited during start-up ({status})"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("redis did not answer PING within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A port that was free a moment ago (the OS picks it).
pub(crate) fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn find_postgres_binary(name: &str) -> Result<PathBuf, String> {
    find_binary(name).ok_or_else(|| install_hint(name, package_for(name)))
}

/// Looks on PATH and in Debian's per-version Postgres directories; installs the package once
/// when it is missing and installing is permitted.
fn find_binary(name: &str) -> Option<PathBuf> {
    search_binary(name).or_else(|| try_install(name).then(|| search_binary(name)).flatten())
}

fn search_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    // Debian keeps server binaries outside PATH, one directory per major version: newest first.
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    dirs.into_iter().map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn package_for(binary: &str) -> &'static str {
    if binary.starts_with("redis") {
        "redis-server"
    } else if binary == "pgbouncer" {
        "pgbouncer"
    } else {
        "postgresql"
    }
}

/// `binary` from PATH (or `/usr/sbin`, where Debian puts PgBouncer), installed with apt when
/// missing and allowed; the error says which package to install.
pub(crate) fn find_binary_or_install(binary: &str, package: &str) -> Result<PathBuf, String> {
    let in_sbin = || Some(Path::new("/usr/sbin").join(binary)).filter(|p| p.is_file());
    search_binary(binary)
        .or_else(in_sbin)
        .or_else(|| try_install(binary).then(|| search_binary(binary).or_else(in_sbin)).flatten())
        .ok_or_else(|| format!("{binary} not found. Install it (Debian/Ubuntu: sudo apt-get install -y {package})"))
}

/// Installs the package that provides `binary` with apt when we are root on a Debian-like system
/// and PRAXIS_NO_INSTALL is not set. Returns whether it ran successfully.
fn try_install(binary: &str) -> bool {
    if std::env::var_os("PRAXIS_NO_INSTALL").is_some() || !is_root() || search_binary("apt-get").is_none() {
        return false;
    }
    let package = package_for(binary);
    println!("xtask: {binary} not found; installing {package} with apt-get");
    let quiet = |c: &mut Command| {
        c.env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
    };
    quiet(Command::new("apt-get").args(["update", "-qq"]));
    quiet(Command::new("apt-get").args(["install", "-y", "-qq", package]))
}

fn install_hint(binary: &str, package: &str) -> String {
    format!(
        "{binary} not found. Install it, or point DATABASE_URL and REDIS_URL at running servers:\n\
         \x20 Debian/Ubuntu: sudo apt-get install -y {package}\n\
         \x20 Fedora:        sudo dnf install -y {}\n\
         \x20 macOS:         brew install {}",
        if package == "postgresql" { "postgresql-server" } else { "redis" },
        if package == "postgresql" { "postgresql" } else { "redis" },
    )
}

fn is_root() -> bool {
    command_output(Command::new("id").arg("-u")).map(|uid| uid.trim() == "0").unwrap_or(false)
}

/// Under root, the (uid, gid) Postgres runs as; `None` when we are not root.
pub(crate) fn unprivileged_user_if_root(data_dir: &Path) -> Result<Option<(u32, u32)>, String> {
    if !is_root() {
        return Ok(None);
    }
    let user = "postgres";
    if command_output(Command::new("id").args(["-u", user])).is_err() {
        let status = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user])
            .status()
            .map_err(|e| format!("cannot create the {user} user: {e}"))?;
        if !status.success() {
            return Err(format!("useradd {user} failed ({status})"));
        }
    }
    let uid = parse_id(command_output(Command::new("id").args(["-u", user]))?)?;
    let gid = parse_id(command_output(Command::new("id").args(["-g", user]))?)?;
    chown(data_dir, uid)?;
    // The data directory must be reachable by that user through every parent directory.
    let reachable =
        Command::new("test").arg("-w").arg(data_dir).uid_gid(uid, gid).status().map(|s| s.success()).unwrap_or(false);
    if !reachable {
        return Err(format!(
            "{} is not reachable by the {user} user (a parent directory is private); \
             set CARGO_TARGET_DIR to a directory under /var/tmp or point DATABASE_URL at a running Postgres",
            data_dir.display()
        ));
    }
    Ok(Some((uid, gid)))
}

trait UidGid {
    fn uid_gid(&mut self, uid: u32, gid: u32) -> &mut Self;
}

impl UidGid for Command {
    fn uid_gid(&mut self, uid: u32, gid: u32) -> &mut Self {
        std::os::unix::process::CommandExt::uid(self, uid);
        std::os::unix::process::CommandExt::gid(self, gid);
        self
    }
}

fn parse_id(text: String) -> Result<u32, String> {
    text.trim().parse().map_err(|_| format!("unexpected output of id: {text:?}"))
}

fn chown(path: &Path, uid: u32) -> Result<(), String> {
    let status = Command::new("chown").arg("-R").arg(uid.to_string()).arg(path).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("chown {} failed", path.display())) }
}

fn command_output(command: &mut Command) -> Result<String, String> {
    let output = command.stderr(Stdio::null()).output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("exited with {}", output.status))
    }
}

fn psql_binary() -> PathBuf {
    find_postgres_binary("psql").unwrap_or_else(|_| PathBuf::from("psql"))
}

/// Runs one statement; errors carry psql's message.
pub fn psql(url: &str, sql: &str) -> Result<(), String> {
    let output = Command::new(psql_binary())
        .args(["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "--dbname", url, "--command", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Runs a query and returns its unaligned, tuples-only output.
pub fn psql_output(url: &str, sql: &str) -> Result<String, String> {
    let output = Command::new(psql_binary())
        .args(["--no-psqlrc", "--quiet", "--tuples-only", "--no-align", "-v", "ON_ERROR_STOP=1", "--dbname", url])
        .args(["--command", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Splits `postgres://user:pass@host:port/db?query` into (authority-after-@, query).
pub(crate) fn url_parts(url: &str) -> (String, String) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (before_query, query) =
        rest.split_once('?').map(|(a, q)| (a, format!("?{q}"))).unwrap_or((rest, String::new()));
    let host_and_path = before_query.rsplit_once('@').map(|(_, h)| h).unwrap_or(before_query);
    let host = host_and_path.split_once('/').map(|(h, _)| h).unwrap_or(host_and_path);
    (host.to_owned(), query)
}

fn with_credentials(url: &str, user: &str, password: &str, database: &str) -> String {
    let (host, query) = url_parts(url);
    format!("postgres://{user}:{password}@{host}/{database}{query}")
}

fn with_database(url: &str, database: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (before_query, query) =
        rest.split_once('?').map(|(a, q)| (a, format!("?{q}"))).unwrap_or((rest, String::new()));
    let authority = before_query.split_once('/').map(|(a, _)| a).unwrap_or(before_query);
    format!("postgres://{authority}/{database}{query}")
}

fn mask_password(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, rest)), Some((_, after))) => {
            let credentials = rest.rsplit_once('@').map(|(c, _)| c).unwrap_or("");
            let user = credentials.split_once(':').map(|(u, _)| u).unwrap_or(credentials);
            format!("{scheme}://{user}:****@{after}")
        }
        _ => url.to_owned(),
    }
}

/// Sends a signal by name with kill(1) (no libc binding needed).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_for_each_role() {
        let admin = "postgres://postgres:pw@db.internal:5433/postgres?sslmode=require";
        assert_eq!(
            with_credentials(admin, "praxis_app", "x", "praxis"),
            "postgres://praxis_app:x@db.internal:5433/praxis?sslmode=require"
        );
        assert_eq!(with_database(admin, "praxis"), "postgres://postgres:pw@db.internal:5433/praxis?sslmode=require");
        assert_eq!(mask_password(admin), "postgres://postgres:****@db.internal:5433/postgres?sslmode=require");
    }
}
