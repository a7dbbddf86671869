//! Authenticated `GET /api/v1/patients/{id}`: every personal field decrypted under the patient's
//! DEK (warm DEK cache), the RLS transaction, and the `patient.read` audit entry, over real
//! loopback HTTP, with Postgres and Redis. Side by side in the same run: the authenticated no-op
//! endpoint (the middleware stack alone), so the ratio is the cost of the read itself. Also
//! counts KMS unwraps for 1,000 reads over 100 hot patients with the DEK cache on and off.
//!
//! Run with `cargo xtask bench -p api --bench patient_read` (it provides Postgres and Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark program

mod support;

use actix_web::{HttpResponse, web};
use api::auth::Principal;
use kernel::SystemClock;
use std::net::TcpListener;
use std::sync::Arc;
use support::{CONCURRENCY, MEASURE};

const PATIENTS: usize = 100;

fn noop_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bench/noop", web::get().to(|_principal: Principal| async { HttpResponse::NoContent().finish() }));
}

/// A server with `dek_cache_capacity` (0 = no cache), its URL, a bearer token, its DEK cache,
/// and `PATIENTS` patients.
async fn server(cache_capacity: usize) -> (String, String, Vec<String>, Arc<crypto::DekCache<kernel::SharedClock>>) {
    let db = testkit::TestDb::new().await;
    let redis = testkit::TestRedis::new();
    let config = support::bench_config(&db, &redis);
    let cache_config = crypto::DekCacheConfig { capacity: cache_capacity, ..crypto::DekCacheConfig::default() };
    let state =
        api::AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap().with_dek_cache(cache_config);
    let cache = state.dek_cache.clone();
    let (tenant, email) = support::create_practice(&db, &state.hasher).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = api::server::start(state, listener, noop_routes).unwrap();
    actix_web::rt::spawn(server);
    let bearer = support::login(&base, tenant, &email).await;
    let client = reqwest::Client::new();
    let mut urls = Vec::with_capacity(PATIENTS);
    for n in 0..PATIENTS {
        let created: serde_json::Value = client
            .post(format!("{base}/api/v1/patients"))
            .header("authorization", &bearer)
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
        urls.push(format!("{base}/api/v1/patients/{}", created["id"].as_str().unwrap()));
    }
    (base, bearer, urls, cache)
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
    let (base, bearer, urls, cache) = server(crypto::DekCacheConfig::default().capacity).await;

    let noop = support::load(vec![format!("{base}/bench/noop")], Some(bearer.clone()), 204).await;
    let reads = support::load(urls.clone(), Some(bearer.clone()), 200).await;
    println!(
        "patient reads, {CONCURRENCY} concurrent clients, {MEASURE:?} each, one server worker, {PATIENTS} patients"
    );
    println!("| request | requests/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    for (name, report) in [
        ("authenticated no-op (middleware only)", &noop),
        ("GET /api/v1/patients/{id} (decrypt 6 fields + audit entry)", &reads),
    ] {
        println!("| {name} | {:.0} | {:.2?} | {:.2?} |", report.rps, report.p50, report.p99);
    }
    println!("ratio read/no-op throughput: {:.2}", reads.rps / noop.rps);

    let cached = unwraps_per_1000_reads(&bearer, &urls, &cache).await;
    let (_, bearer_off, urls_off, cache_off) = server(0).await;
    let uncached = unwraps_per_1000_reads(&bearer_off, &urls_off, &cache_off).await;
    println!("KMS unwraps per 1,000 reads of {PATIENTS} hot patients: DEK cache on {cached}, off {uncached}");
}
