//! Shared by the HTTP load benchmarks: a closed-loop load generator over real loopback HTTP,
//! and the set-up of a practice with a signed-in admin.
#![allow(dead_code)] // each benchmark uses the part it needs

use kernel::{Role, TenantId, UserId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store_postgres::{DbContext, begin, identity as accounts};

pub const CONCURRENCY: usize = 16;
pub const WARMUP: Duration = Duration::from_secs(1);
pub const MEASURE: Duration = Duration::from_secs(5);
pub const PASSWORD: &str = "violet tram elbow quiz 42";

pub struct Report {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub requests: usize,
    /// CPU time per request during the measured run, by process (see [`CpuSample`]).
    pub cpu: CpuPerRequest,
}

/// CPU time the processes of a run have used so far, read from `/proc` (Linux; all zero
/// elsewhere): this benchmark process (the server and the load generator share it), Postgres
/// (every `postgres` process: backends, WAL writer, checkpointer) and Redis. The difference of two
/// samples divided by the requests between them is where each request's CPU goes, and the
/// machine's cores divided by its sum is the most this path can do here, whatever the code.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    this_process: Duration,
    postgres: Duration,
    redis: Duration,
}

/// Microseconds of CPU per request, by process.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPerRequest {
    pub this_process_us: f64,
    pub postgres_us: f64,
    pub redis_us: f64,
}

impl CpuPerRequest {
    pub fn total_us(&self) -> f64 {
        self.this_process_us + self.postgres_us + self.redis_us
    }

    /// Requests per second the machine's cores allow at this CPU cost per request.
    pub fn ceiling_rps(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        if self.total_us() > 0.0 { cores * 1e6 / self.total_us() } else { 0.0 }
    }
}

impl std::fmt::Display for CpuPerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} µs (Praxis + load generator {:.0}, Postgres {:.0}, Redis {:.0}; ceiling {:.0} req/s)",
            self.total_us(),
            self.this_process_us,
            self.postgres_us,
            self.redis_us,
            self.ceiling_rps()
        )
    }
}

impl CpuSample {
    pub fn now() -> Self {
        let ticks_per_second = clock_ticks_per_second();
        let own_pid = std::process::id().to_string();
        let mut sample = CpuSample::default();
        let Ok(entries) = std::fs::read_dir("/proc") else { return sample };
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split at the
            // last `)`; utime and stime are fields 14 and 15, the 12th and 13th after it.
            let Some((head, rest)) = stat.rsplit_once(')') else { continue };
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            let cpu = Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / ticks_per_second);
            if pid == own_pid {
                sample.this_process += cpu;
            } else if comm.starts_with("postgres") {
                sample.postgres += cpu;
            } else if comm.starts_with("redis-server") {
                sample.redis += cpu;
            }
        }
        sample
    }

    /// CPU per request between `self` (earlier) and `later`.
    pub fn per_request(&self, later: &CpuSample, requests: usize) -> CpuPerRequest {
        let per = |before: Duration, after: Duration| {
            after.saturating_sub(before).as_secs_f64() * 1e6 / requests.max(1) as f64
        };
        CpuPerRequest {
            this_process_us: per(self.this_process, later.this_process),
            postgres_us: per(self.postgres, later.postgres),
            redis_us: per(self.redis, later.redis),
        }
    }
}

/// `getconf CLK_TCK` (the unit of `/proc/*/stat` times), 100 when it cannot be asked.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The `q` quantile (0..=1) of `samples`, which it sorts; zero for none.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
}

/// `CONCURRENCY` clients, each sending its next request when the previous one answered, for
/// `WARMUP` (discarded) and then `MEASURE`. `urls` are used round robin; every answer must have
/// status `expect`.
pub async fn load(urls: Vec<String>, authorization: Option<String>, expect: u16) -> Report {
    load_each(urls.into_iter().map(|url| (url, authorization.clone())).collect(), expect).await
}

/// As [`load`], with each URL's own `Authorization` value (e.g. one signed-in admin per
/// practice).
pub async fn load_each(requests: Vec<(String, Option<String>)>, expect: u16) -> Report {
    let client = reqwest::Client::new();
    let run = |duration: Duration| {
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|worker| {
                let (client, requests) = (client.clone(), requests.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let deadline = Instant::now() + duration;
                    let mut next = worker;
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let (url, authorization) = &requests[next % requests.len()];
                        let mut request = client.get(url);
                        next += CONCURRENCY;
                        if let Some(value) = authorization {
                            request = request.header("authorization", value);
                        }
                        let response = request.send().await.unwrap();
                        let status = response.status();
                        if status != expect {
                            // The problem body says why (a 500's request id, a 503's reason).
                            let body = response.text().await.unwrap_or_default();
                            assert_eq!(status, expect, "the benchmark endpoint must succeed: {body}");
                        }
                        latencies.push(started.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        }
    };
    run(WARMUP).await;
    let cpu_before = CpuSample::now();
    let started = Instant::now();
    let mut latencies = run(MEASURE).await;
    let elapsed = started.elapsed();
    let cpu = cpu_before.per_request(&CpuSample::now(), latencies.len());
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Report {
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        requests: latencies.len(),
        cpu,
    }
}

/// A practice with one admin whose password is [`PASSWORD`].
pub async fn create_practice(db: &testkit::TestDb, hasher: &identity::PasswordHasher) -> (TenantId, String) {
    create_named_practice(db, hasher, "admin@bench.test").await
}

/// A practice with one admin, `email`, whose password is [`PASSWORD`].
pub async fn create_named_practice(
    db: &testkit::TestDb,
    hasher: &identity::PasswordHasher,
    email: &str,
) -> (TenantId, String) {
    let tenant = TenantId::new();
    let admin = UserId::new();
    let mut tx = begin(&db.app_pool, &DbContext::user(tenant, admin, Role::Admin)).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'Bench')")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    accounts::insert_user(
        &mut tx,
        &accounts::NewUser {
            id: admin,
            tenant,
            email: email.into(),
            role: Role::Admin,
            patient: None,
            password_hash: hasher.hash(PASSWORD).unwrap(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (tenant, email.into())
}

/// Logs in over HTTP and returns the `Authorization` header value.
pub async fn login(base: &str, tenant: TenantId, email: &str) -> String {
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({ "practice_id": tenant, "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    format!("Bearer {}", login["token"].as_str().unwrap())
}

/// The configuration of a benchmark server: limits out of the way, cheap password hashing.
pub fn bench_config(db: &testkit::TestDb, redis: &testkit::TestRedis) -> api::config::Config {
    let mut config = api::config::Config::default();
    config.database.url = Some(kernel::Secret::new(db.app_url.clone()));
    config.redis.url = Some(kernel::Secret::new(redis.url.clone()));
    config.redis.key_prefix = redis.prefix.clone();
    config.rate_limits.global_per_minute = 10_000_000;
    config.rate_limits.user_per_minute = 10_000_000;
    config.auth.argon2_memory_kib = 1024;
    config.auth.argon2_iterations = 1;
    config.server.workers = 1;
    config.kms.local.key_file =
        std::env::temp_dir().join(format!("praxis-bench-{}.key", uuid::Uuid::new_v4().simple()));
    config
}

/// The sealer of `praxis serve` (`audit.seal_interval_ms` = 100), collecting each sealed entry's
/// lag while `measuring` is set.
pub fn run_sealer(services: app::Services, measuring: Arc<AtomicBool>) -> Arc<Mutex<Vec<Duration>>> {
    let lags = Arc::new(Mutex::new(Vec::new()));
    let collected = lags.clone();
    actix_web::rt::spawn(async move {
        loop {
            let round = services.seal_audit_trails(1000).await.unwrap();
            if measuring.load(Ordering::SeqCst) {
                let mut lags = collected.lock().unwrap();
                lags.extend(round.lags.iter().map(|lag| lag.unsigned_abs()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    lags
}
