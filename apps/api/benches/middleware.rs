//! What the middleware stack costs: requests per second and latency of an authenticated no-op
//! endpoint through the full Praxis stack (edge, IP block list, global rate limit, CORS, session
//! authentication from the principal cache with its revocation markers and per-user rate limit)
//! against the same no-op handler on a bare actix-web server, Praxis's `GET /health/live` (no
//! work) and `GET /api/v1/me` (which also reads the account), side by side in one run, over real
//! loopback HTTP.
//!
//! Run with `cargo xtask bench -p api --bench middleware` (it provides Postgres and Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark program

use actix_web::{App, HttpResponse, HttpServer, web};
use api::auth::Principal;
use kernel::SystemClock;
use std::net::TcpListener;
use std::sync::Arc;

mod support;
use support::{CONCURRENCY, MEASURE};

fn noop_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bench/noop", web::get().to(|_principal: Principal| async { HttpResponse::NoContent().finish() }));
}

#[actix_web::main]
async fn main() {
    api::cli::install_tls_provider();
    // The full stack.
    let db = testkit::TestDb::new().await;
    let redis = testkit::TestRedis::new();
    let config = support::bench_config(&db, &redis);
    let state = api::AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap();
    let (tenant, email) = support::create_practice(&db, &state.hasher).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let praxis_addr = listener.local_addr().unwrap();
    let praxis = api::server::start(state, listener, noop_routes).unwrap();
    let praxis_handle = praxis.handle();
    actix_web::rt::spawn(praxis);
    let bearer = support::login(&format!("http://{praxis_addr}"), tenant, &email).await;

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

    let praxis = format!("http://{praxis_addr}");
    let bare_report = support::load(vec![format!("http://{bare_addr}/bench/noop")], None, 204).await;
    let live_report = support::load(vec![format!("{praxis}/health/live")], None, 200).await;
    let full_report = support::load(vec![format!("{praxis}/bench/noop")], Some(bearer.clone()), 204).await;
    let me_report = support::load(vec![format!("{praxis}/api/v1/me")], Some(bearer), 200).await;
    println!("middleware stack cost, {CONCURRENCY} concurrent clients, {MEASURE:?} each, one server worker each");
    println!("| stack | requests/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    for (name, report) in [
        ("bare actix-web, no middleware", &bare_report),
        ("Praxis `GET /health/live` (no work)", &live_report),
        ("Praxis, authenticated no-op (full stack)", &full_report),
        ("Praxis `GET /api/v1/me` (authenticated, reads the account)", &me_report),
    ] {
        println!("| {name} | {:.0} | {:.2?} | {:.2?} |", report.rps, report.p50, report.p99);
    }
    println!("ratio authenticated no-op / bare actix-web: {:.3}", full_report.rps / bare_report.rps);
    println!("ratio authenticated no-op / health/live: {:.3}", full_report.rps / live_report.rps);
    println!("ratio /api/v1/me / bare actix-web: {:.3}", me_report.rps / bare_report.rps);
    println!("ratio /api/v1/me / health/live: {:.3}", me_report.rps / live_report.rps);
    praxis_handle.stop(true).await;
    bare_handle.stop(true).await;
}
