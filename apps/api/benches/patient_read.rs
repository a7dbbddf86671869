//! Authenticated `GET /api/v1/patients/{id}`: every personal field decrypted under the patient's
//! DEK (warm DEK cache), the read under the caller's RLS context, and the `patient.read` audit
//! entry, over real loopback HTTP, with Postgres and Redis, and the audit sealer running as in
//! `praxis serve`.
//! Side by side in the same run: `GET /health/live` (no work), the authenticated no-op endpoint
//! (the middleware stack alone), reads of one practice's patients, and reads spread over 16
//! practices (one patient each), so the ratios show the cost of the read itself and whether a
//! practice serialises its own reads, and the one-practice reads again with unnamed statements
//! (`database.prepared_statements = "unnamed"`). Also side by side: the one-practice reads on
//! servers whose reads share audit commits differently (`audit.read_group_commit`: no spare
//! runner, spares after 10 ms instead of 50, 2 and 4 eager runners, and one commit per read).
//! Reports the sealer's lag (entry time to sealed) under the read load. Also counts KMS unwraps
//! for 1,000 reads over 100 hot patients with the DEK cache on and off.
//!
//! Run with `cargo xtask bench -p api --bench patient_read` (it provides Postgres and Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark program

mod support;

use actix_web::{HttpResponse, web};
use api::auth::Principal;
use api::config::audit::ReadGroupCommitConfig;
use app::group_commit::GroupCommit;
use kernel::SystemClock;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{CONCURRENCY, MEASURE};

const PATIENTS: usize = 100;
const PRACTICES: usize = 16;

fn noop_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bench/noop", web::get().to(|_principal: Principal| async { HttpResponse::NoContent().finish() }));
}

/// A server with `dek_cache_capacity` (0 = no cache) whose reads share audit commits as
/// `read_group_commit` says, its URL, a bearer token, its DEK cache, and `PATIENTS` patients.
async fn server(cache_capacity: usize, read_group_commit: GroupCommit) -> Bench {
    let db = testkit::TestDb::new().await;
    let redis = testkit::TestRedis::new();
    let mut config = support::bench_config(&db, &redis);
    config.audit.read_group_commit = ReadGroupCommitConfig {
        max_batch: read_group_commit.max_batch,
        runners: read_group_commit.runners,
        spare_runner_after_ms: u64::try_from(read_group_commit.spare_runner_after.as_millis()).unwrap(),
    };
    let cache_config = crypto::DekCacheConfig { capacity: cache_capacity, ..crypto::DekCacheConfig::default() };
    let state =
        api::AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap().with_dek_cache(cache_config);
    let cache = state.dek_cache.clone();
    let hasher = state.hasher.clone();
    let services = state.app.clone();
    let (tenant, email) = support::create_practice(&db, &state.hasher).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = api::server::start(state, listener, noop_routes).unwrap();
    actix_web::rt::spawn(server);
    let bearer = support::login(&base, tenant, &email).await;
    let client = reqwest::Client::new();
    let mut urls = Vec::with_capacity(PATIENTS);
    for n in 0..PATIENTS {
        urls.push(create_patient(&client, &base, &bearer, n).await);
    }
    // One patient in each of 16 practices, each read by its own practice's admin.
    let mut spread = Vec::with_capacity(PRACTICES);
    for p in 0..PRACTICES {
        let (tenant, email) = support::create_named_practice(&db, &hasher, &format!("admin{p}@bench.test")).await;
        let bearer = support::login(&base, tenant, &email).await;
        spread.push((create_patient(&client, &base, &bearer, p).await, Some(bearer)));
    }
    Bench { base, bearer, urls, spread, cache, services, db }
}

struct Bench {
    base: String,
    bearer: String,
    /// `PATIENTS` patients of one practice.
    urls: Vec<String>,
    /// One patient in each of `PRACTICES` practices, with that practice's admin's bearer.
    spread: Vec<(String, Option<String>)>,
    cache: Arc<crypto::DekCache<kernel::SharedClock>>,
    services: app::Services,
    db: testkit::TestDb,
}

async fn create_patient(client: &reqwest::Client, base: &str, bearer: &str, n: usize) -> String {
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/patients"))
        .header("authorization", bearer)
        .json(&serde_json::json!({
            "name": format!("Patient Number {n}"),
            "email": format!("patient{n}@example.org"),
            "phone": format!("+49151{n:07}"),
            "date_of_birth": "1980-05-17",
            "address": "Somewhere Street 1\n12345 Town",
            "clinical_notes": "Session notes ".repeat(20),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    format!("{base}/api/v1/patients/{}", created["id"].as_str().unwrap())
}

/// KMS unwraps caused by 1,000 reads over the 100 patients (each miss of the cache is one).
async fn unwraps_per_1000_reads(bearer: &str, urls: &[String], cache: &crypto::DekCache<kernel::SharedClock>) -> u64 {
    cache.clear();
    let before = cache.stats().misses;
    let client = reqwest::Client::new();
    for n in 0..1000 {
        let response = client.get(&urls[n % urls.len()]).header("authorization", bearer).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    cache.stats().misses - before
}

#[actix_web::main]
async fn main() {
    api::cli::install_tls_provider();
    let bench = server(crypto::DekCacheConfig::default().capacity, GroupCommit::READS).await;
    // Servers whose reads share audit commits otherwise, built first so their setup does not
    // fall into a measured run; each has its own database and patients.
    let mut variants = Vec::new();
    for (name, read_group_commit) in [
        ("read group commit, one runner and no spare", GroupCommit { runners: 1, ..GroupCommit::READS }),
        (
            "read group commit, spare runners after 10 ms",
            GroupCommit { spare_runner_after: Duration::from_millis(10), ..GroupCommit::READS },
        ),
        (
            "read group commit, 2 eager runners (before 2026-12-06)",
            GroupCommit { runners: 2, spare_runner_after: Duration::ZERO, ..GroupCommit::READS },
        ),
        (
            "read group commit, 4 eager runners",
            GroupCommit { runners: 4, spare_runner_after: Duration::ZERO, ..GroupCommit::READS },
        ),
        (
            "one audit commit per read (16 at once)",
            GroupCommit { max_batch: 1, runners: 16, spare_runner_after: Duration::ZERO },
        ),
    ] {
        variants.push((name, server(crypto::DekCacheConfig::default().capacity, read_group_commit).await));
    }
    let (base, bearer, urls) = (bench.base.clone(), bench.bearer.clone(), bench.urls.clone());
    let measuring = Arc::new(AtomicBool::new(false));
    let lags = support::run_sealer(bench.services.clone(), measuring.clone());

    let live = support::load(vec![format!("{base}/health/live")], None, 200).await;
    let noop = support::load(vec![format!("{base}/bench/noop")], Some(bearer.clone()), 204).await;
    measuring.store(true, Ordering::SeqCst);
    let one_practice = support::load(urls.clone(), Some(bearer.clone()), 200).await;
    let spread = support::load_each(bench.spread.clone(), 200).await;
    // Let the last round seal what the load left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(false, Ordering::SeqCst);
    let mut lags = lags.lock().unwrap().clone();
    // The variants, one after another; each server's entries are sealed by its own sealer.
    let mut variant_reports = Vec::new();
    for (name, variant) in &variants {
        drop(support::run_sealer(variant.services.clone(), Arc::new(AtomicBool::new(false))));
        variant_reports.push((*name, support::load(variant.urls.clone(), Some(variant.bearer.clone()), 200).await));
    }
    // The default once more after the variants: how much of a difference is the order of runs.
    variant_reports.push(("default settings again", support::load(urls.clone(), Some(bearer.clone()), 200).await));
    // The same reads with unnamed statements (`database.prepared_statements = "unnamed"`, for a
    // pooler that cannot track named ones). The form is process-wide and one-way: building a
    // pool for it switches every pool of this process, so this runs after the cached runs.
    let unnamed_pool = store_postgres::PoolOptions {
        prepared_statements: store_postgres::PreparedStatements::Unnamed,
        ..store_postgres::PoolOptions::default()
    };
    drop(store_postgres::connect_lazy(&bench.db.app_url, &unnamed_pool).unwrap());
    let one_practice_unnamed = support::load(urls.clone(), Some(bearer.clone()), 200).await;
    println!(
        "patient reads, {CONCURRENCY} concurrent clients, {MEASURE:?} each, one server worker, {PATIENTS} patients of one practice vs one patient in each of {PRACTICES} practices"
    );
    println!("| request | requests/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    for (name, report) in [
        ("GET /health/live (no work)", &live),
        ("authenticated no-op (middleware only)", &noop),
        ("GET /api/v1/patients/{id}, one practice (decrypt 6 fields + audit entry)", &one_practice),
        ("GET /api/v1/patients/{id}, spread over 16 practices", &spread),
        ("GET /api/v1/patients/{id}, one practice, unnamed statements", &one_practice_unnamed),
    ] {
        println!("| {name} | {:.0} | {:.2?} | {:.2?} |", report.rps, report.p50, report.p99);
    }
    for (name, report) in &variant_reports {
        println!(
            "| GET /api/v1/patients/{{id}}, one practice, {name} | {:.0} | {:.2?} | {:.2?} |",
            report.rps, report.p50, report.p99
        );
    }
    println!("CPU per request, measured runs (where the limit is on this machine):");
    for (name, report) in [
        ("GET /health/live", &live),
        ("authenticated no-op", &noop),
        ("patient read, one practice", &one_practice),
        ("patient read, 16 practices", &spread),
        ("patient read, one practice, unnamed statements", &one_practice_unnamed),
    ] {
        println!("- {name}: {}", report.cpu);
    }
    for (name, report) in &variant_reports {
        println!("- patient read, one practice, {name}: {}", report.cpu);
    }
    println!("ratio one practice / spread over 16 practices: {:.2}", one_practice.rps / spread.rps);
    println!("ratio read (one practice) / no-op: {:.2}", one_practice.rps / noop.rps);
    println!("ratio read (one practice) / health live: {:.3}", one_practice.rps / live.rps);
    println!("read (one practice) p99 / p50: {:.2}", one_practice.p99.as_secs_f64() / one_practice.p50.as_secs_f64());
    println!(
        "ratio read (one practice) unnamed / cached statements: {:.2}",
        one_practice_unnamed.rps / one_practice.rps
    );
    for (name, report) in &variant_reports {
        println!("ratio read (one practice), {name} / default: {:.2}", report.rps / one_practice.rps);
        println!("ratio read (one practice), {name} / health live: {:.3}", report.rps / live.rps);
    }
    println!(
        "sealer lag (entry time to sealed) under the read load: {} entries, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        lags.len(),
        support::quantile(&mut lags, 0.50),
        support::quantile(&mut lags, 0.99),
        support::quantile(&mut lags, 1.0)
    );

    let cached = unwraps_per_1000_reads(&bearer, &urls, &bench.cache).await;
    let off = server(0, GroupCommit::READS).await;
    let uncached = unwraps_per_1000_reads(&off.bearer, &off.urls, &off.cache).await;
    println!("KMS unwraps per 1,000 reads of {PATIENTS} hot patients: DEK cache on {cached}, off {uncached}");
}
