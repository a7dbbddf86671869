//! What metrics cost: the authenticated no-op endpoint (the full middleware stack) and Stripe
//! webhook ingestion (verify, claim, inbox, audit), with metrics off and on, in one run.
//!
//! Metrics are process-wide and cannot be switched off once installed, so each measurement runs
//! in a child process of this benchmark: "off" never installs them (every recording is a no-op),
//! "on" installs them with the Prometheus page and registers the gauges, as `praxis serve` does
//! with `telemetry.metrics_bind` set, and scrapes the page once per run (the page must be live).
//! The children run in the order off, on, on, off (ABBA), so a drift of the machine during the
//! run weighs on both sides alike.
//!
//! Run with `cargo xtask bench -p api --bench metrics_overhead` (it provides Postgres and Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::panic)] // a benchmark program

use actix_web::{HttpResponse, web};
use api::auth::Principal;
use api::config::webhooks::{StripeWebhook, TenantWebhooks};
use kernel::{Secret, SystemClock};
use ring::hmac;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::{CONCURRENCY, MEASURE, WARMUP};

const MODE: &str = "PRAXIS_BENCH_METRICS";

fn noop_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bench/noop", web::get().to(|_principal: Principal| async { HttpResponse::NoContent().finish() }));
}

fn main() {
    match std::env::var(MODE).as_deref() {
        Ok(mode @ ("on" | "off")) => child(mode == "on"),
        _ => parent(),
    }
}

fn parent() {
    let exe = std::env::current_exe().unwrap();
    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    for mode in ["off", "on", "on", "off"] {
        let output = Command::new(&exe).env(MODE, mode).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{mode} run failed:\n{stdout}{}", String::from_utf8_lossy(&output.stderr));
        let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("a RESULT line");
        let numbers: Vec<f64> = line.split_whitespace().map(|n| n.parse().unwrap()).collect();
        println!("metrics {mode}: no-op {:.0} req/s, webhook ingest {:.0} req/s", numbers[0], numbers[1]);
        results.push((mode, numbers[0], numbers[1]));
    }
    let mean = |mode: &str, pick: fn(&(&str, f64, f64)) -> f64| {
        let runs: Vec<f64> = results.iter().filter(|r| r.0 == mode).map(pick).collect();
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    println!();
    println!(
        "metrics overhead, {CONCURRENCY} concurrent clients, {MEASURE:?} per run, runs off/on/on/off, one server worker"
    );
    println!("| endpoint | metrics off (req/s) | metrics on (req/s) | on/off |");
    println!("| --- | --- | --- | --- |");
    for (name, pick) in [
        ("authenticated no-op (full middleware stack)", (|r: &(&str, f64, f64)| r.1) as fn(&(&str, f64, f64)) -> f64),
        ("Stripe webhook ingest", |r: &(&str, f64, f64)| r.2),
    ] {
        let (off, on) = (mean("off", pick), mean("on", pick));
        println!("| {name} | {off:.0} | {on:.0} | {:.3} |", on / off);
    }
}

#[actix_web::main]
async fn child(metrics_on: bool) {
    api::cli::install_tls_provider();
    let db = testkit::TestDb::new().await;
    let redis = testkit::TestRedis::new();
    let hasher =
        identity::PasswordHasher::new(identity::Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 })
            .unwrap();
    let (tenant, email) = support::create_practice(&db, &hasher).await;
    let secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
    let mut config = support::bench_config(&db, &redis);
    config.webhooks.rate_limits.stripe = 100_000_000;
    config.webhooks.tenants.insert(
        tenant.to_string(),
        TenantWebhooks {
            stripe: Some(StripeWebhook {
                signing_secrets: vec![Secret::new(secret.clone())],
                ..StripeWebhook::default()
            }),
            ..TenantWebhooks::default()
        },
    );
    let exporter = if metrics_on {
        config.telemetry.metrics_bind = "127.0.0.1:0".into();
        api::metrics::install(&config, true).unwrap()
    } else {
        None
    };
    let state = api::AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap();
    let scrape_url = exporter.map(|exporter| {
        api::metrics::observe(&state);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        actix_web::rt::spawn(api::metrics::start_server(exporter, listener).unwrap());
        url
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    actix_web::rt::spawn(api::server::start(state, listener, noop_routes).unwrap());
    let bearer = support::login(&base, tenant, &email).await;

    let noop = support::load(vec![format!("{base}/bench/noop")], Some(bearer), 204).await;
    let webhooks = webhook_load(&format!("{base}/webhooks/stripe/{tenant}"), &secret).await;
    if let Some(url) = scrape_url {
        let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
        assert!(page.contains("praxis_webhook_verifications_total"), "the metrics page is live");
    }
    println!("RESULT {:.1} {:.1}", noop.rps, webhooks);
}

/// Requests per second of `CONCURRENCY` closed-loop clients posting freshly signed Stripe
/// deliveries (each a new event) for `WARMUP` and then `MEASURE`.
async fn webhook_load(url: &str, secret: &str) -> f64 {
    let client = reqwest::Client::new();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let run = |duration: Duration, phase: &'static str| {
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|worker| {
                let (client, url, key) = (client.clone(), url.to_owned(), key.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + duration;
                    let mut sent = 0usize;
                    while Instant::now() < deadline {
                        let now = kernel::Clock::now(&SystemClock).unix_timestamp();
                        let body = serde_json::json!({
                            "id": format!("evt_{phase}_{worker}_{sent}"), "object": "event",
                            "type": "customer.created", "livemode": false, "created": now,
                            "data": { "object": { "id": "cus_1", "object": "customer", "metadata": {} } }
                        })
                        .to_string();
                        let tag = hmac::sign(&key, format!("{now}.{body}").as_bytes());
                        let response = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("stripe-signature", format!("t={now},v1={}", hex::encode(tag.as_ref())))
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        assert!(response.status().is_success(), "webhook refused: {}", response.status());
                        sent += 1;
                    }
                    sent
                })
            })
            .collect::<Vec<_>>();
        async move {
            let mut total = 0;
            for task in tasks {
                total += task.await.unwrap();
            }
            total
        }
    };
    run(WARMUP, "warmup").await;
    let started = Instant::now();
    let sent = run(MEASURE, "measure").await;
    sent as f64 / started.elapsed().as_secs_f64()
}
