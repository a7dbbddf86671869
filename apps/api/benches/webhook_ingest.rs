//! Stripe webhook ingestion (verify + de-duplicate + store) under load: Praxis against the Express
//! baseline of `../shared/peers/express-baseline`, on the same machine, the same Postgres and
//! Redis, and the same signed requests, side by side.
//!
//! Run with `cargo xtask bench -p api --bench webhook_ingest` (it provides Postgres and Redis).
//! Needs `node`/`npm` and `wrk`; the baseline is installed and run by its own `run.sh`, from its
//! own directory (`PRAXIS_EXPRESS_BASELINE` overrides where that is). Its `run.sh requests`
//! signs the requests with Stripe's SDK and `run.sh load` drives `wrk` (1 thread, 32 connections,
//! 15 s) with its `wrk_stripe.lua`, which posts to `/webhooks/stripe`: Praxis serves that path
//! for the one practice configuring Stripe. Both servers get the same randomly generated signing
//! secret. Praxis runs with request logging off (the baseline logs nothing) and with its rate
//! limits raised out of the way (the baseline's limit is unlimited by default too). Praxis runs
//! 2 HTTP workers (`PRAXIS_BENCH_WORKERS` sets another number).
//!
//! Praxis is measured with its default group commit and with variants of it (fewer and more runners; one
//! transaction per delivery), each a server of its own on the same database, one after another
//! between two runs of the baseline, so the table compares them all in one run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)] // a benchmark program

use api::config::webhooks::{GroupCommitConfig, StripeWebhook, TenantWebhooks};
use app::webhook_ingest::GroupCommit;
use kernel::{Role, Secret, SystemClock, TenantId, UserId};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store_postgres::{DbContext, begin};

/// Signed requests generated for each run: more than either server answers in 15 s, so every
/// request is a new event (a server that ran out would be measured on the duplicate path).
const REQUESTS: usize = 150_000;

struct Load {
    rps: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
    requests: u64,
}

fn baseline_dir() -> PathBuf {
    std::env::var_os("PRAXIS_EXPRESS_BASELINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/express-baseline"))
}

fn run_sh(dir: &PathBuf) -> Command {
    let mut command = Command::new("bash");
    command.arg(dir.join("run.sh")).current_dir(dir);
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `wrk --latency` output: requests/s, the 50th and 99th percentile, non-2xx answers.
fn parse_wrk(output: &str) -> Load {
    let value_after = |prefix: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|rest| rest.trim().to_owned()))
            .unwrap_or_default()
    };
    let requests = output
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Load {
        rps: value_after("Requests/sec:").parse().unwrap_or(0.0),
        p50: value_after("50%"),
        p99: value_after("99%"),
        non_2xx: value_after("Non-2xx or 3xx responses:").parse().unwrap_or(0),
        requests,
    }
}

fn load(dir: &PathBuf, url: &str, requests_file: &str) -> Load {
    let output = run_sh(dir).args(["load", url, requests_file]).output().expect("run.sh load");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    println!("{text}");
    parse_wrk(&text)
}

/// The same `wrk` load (1 thread, 32 connections, 15 s) on a route that does no work: Praxis's
/// `GET /health/live` (no Redis, no Postgres). What this machine and load generator allow for
/// any HTTP server here, measured in the same run: the ceiling the two servers share.
fn ceiling(url: &str) -> Load {
    let output = Command::new("wrk")
        .args(["-t1", "-c32", "-d15s", "--latency", &format!("{url}/health/live")])
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    println!("{text}");
    parse_wrk(&text)
}

fn generate_requests(dir: &PathBuf, secret: &str, file: &str) {
    let status = run_sh(dir)
        .args(["requests", &REQUESTS.to_string(), file])
        .env("STRIPE_WEBHOOK_SECRET", secret)
        .status()
        .expect("run.sh requests");
    assert!(status.success(), "run.sh requests failed");
}

async fn wait_until_up(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} did not come up");
}

/// Sends the first generated request (as `wrk_stripe.lua` would) and returns the answer.
async fn probe(url: &str, file: &str) -> (reqwest::StatusCode, String) {
    let text = std::fs::read_to_string(file).unwrap();
    let (header, body) = text.lines().next().and_then(|l| l.split_once('\t')).expect("a request line");
    let response = reqwest::Client::new()
        .post(format!("{url}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap_or_default())
}

/// A Praxis server of this run.
struct PraxisServer {
    url: String,
    handle: actix_web::dev::ServerHandle,
    /// Kept to close the pool while the runtime still runs (a pool dropped after it panics).
    pool: sqlx::PgPool,
}

/// Praxis on `db` and `redis`, receiving `tenant`'s Stripe webhooks signed with `secret`, with
/// request logging off and rate limits out of the way, sharing transactions as `group_commit` says.
fn start_praxis(
    db: &testkit::TestDb,
    redis: &testkit::TestRedis,
    tenant: TenantId,
    secret: &str,
    group_commit: GroupCommit,
) -> PraxisServer {
    let mut config = api::config::Config::default();
    config.database.url = Some(Secret::new(db.app_url.clone()));
    config.database.max_connections = 16;
    config.redis.url = Some(Secret::new(redis.url.clone()));
    config.redis.key_prefix = redis.prefix.clone();
    config.rate_limits.global_per_minute = 100_000_000;
    config.webhooks.rate_limits.stripe = 100_000_000;
    config.webhooks.group_commit =
        GroupCommitConfig { max_batch: group_commit.max_batch, runners: group_commit.runners };
    config.server.workers = std::env::var("PRAXIS_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    config.webhooks.tenants.insert(
        tenant.to_string(),
        TenantWebhooks {
            stripe: Some(StripeWebhook {
                signing_secrets: vec![Secret::new(secret.to_owned())],
                ..StripeWebhook::default()
            }),
            ..TenantWebhooks::default()
        },
    );
    let state = api::AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let pool = state.db.clone();
    let server = api::server::start(state, listener, api::server::no_extra_routes).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    PraxisServer { url, handle, pool }
}

struct Baseline(Child);

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_web::main]
async fn main() {
    api::cli::install_tls_provider();
    let dir = baseline_dir();
    assert!(dir.join("run.sh").is_file(), "no Express baseline at {} (set PRAXIS_EXPRESS_BASELINE)", dir.display());
    // A signing secret made for this run, the same for both servers.
    let secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());

    // Praxis: its own database and Redis namespace, one practice with Stripe configured.
    let db = testkit::TestDb::new().await;
    let redis = testkit::TestRedis::new();
    let tenant = TenantId::new();
    let admin = UserId::new();
    let mut tx = begin(&db.app_pool, &DbContext::user(tenant, admin, Role::Admin)).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'Bench')")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Praxis with its default group commit, and variants of it, one server each, all measured
    // in this run: which setting is fastest now that no chain-head lock orders a practice's
    // commits (issue 18). `max_batch = 1` is one transaction per delivery.
    let variants = [
        ("Praxis (default group commit)", GroupCommit::default()),
        ("Praxis, group commit with 2 runners", GroupCommit { runners: 2, ..GroupCommit::default() }),
        ("Praxis, group commit with 8 runners", GroupCommit { runners: 8, ..GroupCommit::default() }),
        (
            "Praxis, one transaction per delivery (16 at once)",
            GroupCommit { max_batch: 1, runners: 16, ..GroupCommit::default() },
        ),
    ];
    let mut servers = Vec::new();
    for (name, group_commit) in variants {
        servers.push((name, start_praxis(&db, &redis, tenant, &secret, group_commit)));
    }

    // The baseline: its own database on the same Postgres, the same Redis.
    let peer_db = format!("peer_{}", uuid::Uuid::new_v4().simple());
    let admin_url = std::env::var("PRAXIS_TEST_DATABASE_URL").expect("run through cargo xtask bench");
    let peer_url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{peer_db}"),
        None => panic!("PRAXIS_TEST_DATABASE_URL has no database"),
    };
    let admin_pool = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {peer_db}"))).execute(&admin_pool).await.unwrap();
    let port = free_port();
    // `serve` installs the baseline's packages on first use (npm ci).
    let baseline = Baseline(
        run_sh(&dir)
            .arg("serve")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &peer_url)
            .env("REDIS_URL", &redis.url)
            .env("STRIPE_WEBHOOK_SECRET", &secret)
            .stdout(Stdio::null())
            .spawn()
            .expect("run.sh serve"),
    );
    let baseline_url = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{baseline_url}/health")).await;
    for (_, server) in &servers {
        wait_until_up(&format!("{}/health/live", server.url)).await;
    }

    let file = std::env::temp_dir().join(format!("praxis-stripe-{}.txt", uuid::Uuid::new_v4().simple()));
    let file = file.to_str().unwrap().to_owned();
    // Fresh requests for each run: Stripe's timestamps must be within 5 minutes, and a second
    // run over the same events would measure the duplicate path.
    let mut runs: Vec<(String, Load)> = Vec::new();
    generate_requests(&dir, &secret, &file);
    println!("== Express baseline ({baseline_url})");
    runs.push(("Express baseline".into(), load(&dir, &baseline_url, &file)));
    for (name, server) in &servers {
        generate_requests(&dir, &secret, &file);
        // One request first: a server that refuses them all would otherwise be measured at speed.
        let (status, body) = probe(&server.url, &file).await;
        assert!(status.is_success(), "{name} refused a signed request: {status} {body}");
        println!("== {name} ({})", server.url);
        runs.push(((*name).to_owned(), load(&dir, &server.url, &file)));
    }
    // The baseline once more: how far it drifted during the run.
    generate_requests(&dir, &secret, &file);
    println!("== Express baseline, again");
    runs.push(("Express baseline, again".into(), load(&dir, &baseline_url, &file)));
    let _ = std::fs::remove_file(&file);
    println!("== HTTP ceiling: Praxis GET /health/live");
    runs.push(("Ceiling: GET /health/live (no work)".into(), ceiling(&servers[0].1.url)));

    let stored: i64 = {
        let mut tx = begin(&db.app_pool, &DbContext::service(tenant)).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    };
    println!();
    println!("| Stripe ingestion, wrk -t1 -c32 -d15s | requests/s | vs baseline | p50 | p99 | non-2xx | requests |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let baseline_rps = (runs[0].1.rps + runs[runs.len() - 2].1.rps) / 2.0;
    for (name, run) in &runs {
        println!(
            "| {name} | {:.0} | {:.2}x | {} | {} | {} | {} |",
            run.rps,
            run.rps / baseline_rps.max(1.0),
            run.p50,
            run.p99,
            run.non_2xx,
            run.requests
        );
    }
    println!("(vs baseline: against the mean of the two baseline runs); Praxis stored {stored} events in all");
    drop(baseline);
    for (_, server) in servers {
        server.handle.stop(true).await;
        server.pool.close().await;
    }
    db.app_pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {peer_db} WITH (FORCE)")))
        .execute(&admin_pool)
        .await
        .unwrap();
    admin_pool.close().await;
}
