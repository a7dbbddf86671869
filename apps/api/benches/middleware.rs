//! What the middleware stack costs: requests per second and latency of an authenticated no-op
//! endpoint through the full Praxis stack (edge, IP block list, global rate limit, CORS, session
//! lookup under RLS, per-user rate limit) against the same no-op handler on a bare actix-web
//! server, side by side in one run, over real loopback HTTP.
//!
//! Run with `cargo xtask bench -p api --bench middleware` (it provides Postgres and Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark program

use actix_web::{App, HttpResponse, HttpServer, web};
use api::auth::Principal;
use kernel::{Role, Secret, SystemClock, TenantId, UserId};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store_postgres::{DbContext, begin, identity as accounts};

const CONCURRENCY: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const PASSWORD: &str = "violet tram elbow quiz 42";

fn noop_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bench/noop", web::get().to(|_principal: Principal| async { HttpResponse::NoContent().finish() }));
}

struct Report {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(url: String, authorization: Option<String>) -> Report {
    let client = reqwest::Client::new();
    let run = |duration: Duration| {
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (client, url, authorization) = (client.clone(), url.clone(), authorization.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let mut request = client.get(&url);
                        if let Some(value) = &authorization {
                            request = request.header("authorization", value);
                        }
                        let response = request.send().await.unwrap();
                        assert_eq!(response.status(), 204, "the benchmark endpoint must succeed");
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
    let started = Instant::now();
    let mut latencies = run(MEASURE).await;
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Report { rps: latencies.len() as f64 / elapsed.as_secs_f64(), p50: at(0.50), p99: at(0.99) }
}

#[actix_web::main]
async fn main() {
    api::cli::install_tls_provider();
    // The full stack.
    let db = testkit::TestDb::new().await;
    let redis = testkit::TestRedis::new();
    let mut config = api::config::Config::default();
    config.database.url = Some(Secret::new(db.app_url.clone()));
    config.redis.url = Some(Secret::new(redis.url.clone()));
    config.redis.key_prefix = redis.prefix.clone();
    config.rate_limits.global_per_minute = 10_000_000;
    config.rate_limits.user_per_minute = 10_000_000;
    config.auth.argon2_memory_kib = 1024;
    config.auth.argon2_iterations = 1;
    config.server.workers = 1;
    let state = api::AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap();
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
            email: "admin@bench.test".into(),
            role: Role::Admin,
            patient: None,
            password_hash: state.hasher.hash(PASSWORD).unwrap(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let praxis_addr = listener.local_addr().unwrap();
    let praxis = api::server::start(state, listener, noop_routes).unwrap();
    let praxis_handle = praxis.handle();
    actix_web::rt::spawn(praxis);
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{praxis_addr}/api/v1/auth/login"))
        .json(&serde_json::json!({ "practice_id": tenant, "email": "admin@bench.test", "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", login["token"].as_str().unwrap());

    // The same handler with nothing in front of it (no auth: nothing to extract).
    let bare_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let bare_addr = bare_listener.local_addr().unwrap();
    let bare = HttpServer::new(|| {
        App::new().route("/bench/noop", web::get().to(|| async { HttpResponse::NoContent().finish() }))
    })
    .workers(1)
    .listen(bare_listener)
    .unwrap()
    .run();
    let bare_handle = bare.handle();
    actix_web::rt::spawn(bare);

    let bare_report = load(format!("http://{bare_addr}/bench/noop"), None).await;
    let full_report = load(format!("http://{praxis_addr}/bench/noop"), Some(bearer)).await;
    println!("middleware stack cost, {CONCURRENCY} concurrent clients, {MEASURE:?} each, one server worker each");
    println!("| stack | requests/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    for (name, report) in
        [("bare actix-web, no middleware", &bare_report), ("Praxis, authenticated (full stack)", &full_report)]
    {
        println!("| {name} | {:.0} | {:.2?} | {:.2?} |", report.rps, report.p50, report.p99);
    }
    println!("ratio full/bare throughput: {:.2}", full_report.rps / bare_report.rps);
    praxis_handle.stop(true).await;
    bare_handle.stop(true).await;
}
