//! `POST /api/v1/appointments` under load: requests per second and latency of booking, with the
//! database's double-booking check (the exclusion constraint), the calendar check (working hours
//! and absences), reminder planning and the `appointment.create` audit entry, over real loopback
//! HTTP with Postgres and Redis.
//!
//! Three workloads, `CONCURRENCY` clients each, side by side in one run:
//! - **distinct slots, one practice**: every client books its own therapist's next free slot, so
//!   every request succeeds (201);
//! - **distinct slots, spread over 16 practices**: the same, each client in a practice of its
//!   own; the ratio of the two shows whether a practice serialises its own bookings;
//! - **racing**: every client books the same next slot of one therapist; one wins (201), the
//!   others are refused by the exclusion constraint (409 naming the slot), then all move on to
//!   the next slot.
//!
//! Run with `cargo xtask bench -p api --bench appointment_create` (it provides Postgres and Redis).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)] // a benchmark program

mod support;

use kernel::{Clock, SystemClock};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{CONCURRENCY, MEASURE, WARMUP};
use time::format_description::well_known::Rfc3339;

/// Five-minute slots from 00:00 to 23:20 UTC, so every slot lies inside the all-day hours.
const SLOTS_PER_DAY: usize = 280;

struct Outcome {
    latencies: Vec<Duration>,
    created: usize,
    refused: usize,
}

struct Report {
    rps: f64,
    p50: Duration,
    p99: Duration,
    created: usize,
    refused: usize,
}

/// The `n`-th five-minute slot from two days ahead (far enough ahead to plan a reminder).
fn slot(n: usize) -> (String, String) {
    let first_day = (SystemClock.now() + time::Duration::days(2)).date().midnight().assume_utc();
    let day = i64::try_from(n / SLOTS_PER_DAY).unwrap();
    let minute = i64::try_from((n % SLOTS_PER_DAY) * 5).unwrap();
    let start = first_day + time::Duration::days(day) + time::Duration::minutes(minute);
    let end = start + time::Duration::minutes(5);
    (start.format(&Rfc3339).unwrap(), end.format(&Rfc3339).unwrap())
}

/// What one client books with: its practice's admin, a patient and a therapist of that practice.
#[derive(Clone)]
struct Seat {
    bearer: String,
    patient: String,
    therapist: String,
}

/// Runs one client per seat for `duration`. Distinct: each request a slot number nobody used
/// before (`next_slot` is shared by the warm-up and the measured run). Racing (all seats on one
/// therapist): every client books `next_slot`; a 201 moves it on.
async fn run(base: &str, seats: &[Seat], duration: Duration, racing: bool, next_slot: Arc<AtomicUsize>) -> Outcome {
    let client = reqwest::Client::new();
    let tasks: Vec<_> = seats
        .iter()
        .cloned()
        .map(|Seat { bearer, patient, therapist }| {
            let (client, url) = (client.clone(), format!("{base}/api/v1/appointments"));
            let next_slot = next_slot.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome { latencies: Vec::new(), created: 0, refused: 0 };
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    let n = if racing {
                        next_slot.load(Ordering::SeqCst)
                    } else {
                        next_slot.fetch_add(1, Ordering::SeqCst)
                    };
                    let (start, end) = slot(n);
                    let body = json!({ "patient_id": patient, "therapist_id": therapist, "start": start,
                                       "end": end, "kind": "therapy_session" });
                    let started = Instant::now();
                    let response = client.post(&url).header("authorization", &bearer).json(&body).send().await.unwrap();
                    let status = response.status().as_u16();
                    outcome.latencies.push(started.elapsed());
                    match status {
                        201 => {
                            outcome.created += 1;
                            if racing {
                                let _ = next_slot.compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst);
                            }
                        }
                        409 => outcome.refused += 1,
                        other => panic!("booking answered {other}: {}", response.text().await.unwrap_or_default()),
                    }
                }
                outcome
            })
        })
        .collect();
    let mut all = Outcome { latencies: Vec::new(), created: 0, refused: 0 };
    for task in tasks {
        let outcome = task.await.unwrap();
        all.latencies.extend(outcome.latencies);
        all.created += outcome.created;
        all.refused += outcome.refused;
    }
    all
}

async fn measure(base: &str, seats: &[Seat], racing: bool) -> Report {
    let next_slot = Arc::new(AtomicUsize::new(0));
    run(base, seats, WARMUP, racing, next_slot.clone()).await;
    let started = Instant::now();
    let mut outcome = run(base, seats, MEASURE, racing, next_slot).await;
    let elapsed = started.elapsed();
    outcome.latencies.sort();
    let latencies = &outcome.latencies;
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Report {
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        created: outcome.created,
        refused: outcome.refused,
    }
}

async fn post(client: &reqwest::Client, url: String, bearer: &str, body: Value) -> Value {
    let response = client.post(url).header("authorization", bearer).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// `therapists` therapists working every day, all day, and one patient, created by `bearer`'s admin.
async fn staff_practice(
    client: &reqwest::Client,
    base: &str,
    bearer: &str,
    therapists: usize,
) -> (Vec<String>, String) {
    let days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let hours = json!({ "time_zone": "UTC",
        "ranges": days.iter().map(|d| json!({ "weekday": d, "start": "00:00", "end": "23:59" })).collect::<Vec<_>>() });
    let mut ids = Vec::with_capacity(therapists);
    for _ in 0..therapists {
        let user = post(
            client,
            format!("{base}/api/v1/users"),
            bearer,
            json!({ "email": format!("therapist-{}@bench.test", uuid::Uuid::new_v4().simple()), "role": "therapist",
                    "password": support::PASSWORD }),
        )
        .await;
        let id = user["id"].as_str().unwrap().to_owned();
        let response = client
            .put(format!("{base}/api/v1/therapists/{id}/working-hours"))
            .header("authorization", bearer)
            .json(&hours)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        ids.push(id);
    }
    let patient = post(client, format!("{base}/api/v1/patients"), bearer, json!({ "name": "Bench Patient" })).await;
    (ids, patient["id"].as_str().unwrap().to_owned())
}

#[actix_web::main]
async fn main() {
    api::cli::install_tls_provider();
    // Warnings and errors of the server (a 503's cause) on stderr, as `praxis serve` logs them.
    let _telemetry = telemetry::init(&telemetry::TelemetryConfig {
        format: telemetry::LogFormat::Pretty,
        filter: "warn".into(),
        otlp_endpoint: None,
        service_name: "praxis-bench".into(),
    })
    .unwrap();
    let db = testkit::TestDb::new().await;
    let redis = testkit::TestRedis::new();
    let mut config = support::bench_config(&db, &redis);
    config.reminders.enabled = false;
    let state = api::AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap();
    let hasher = state.hasher.clone();
    // The sealer, as `praxis serve` runs it.
    support::run_sealer(state.app.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let (tenant, email) = support::create_practice(&db, &state.hasher).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = api::server::start(state, listener, api::server::no_extra_routes).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let bearer = support::login(&base, tenant, &email).await;
    let client = reqwest::Client::new();

    // Two sets of therapists (one per client each) in the first practice: the first set for the
    // distinct-slot run, the second for the racing run (which uses its first therapist).
    let (therapists, patient) = staff_practice(&client, &base, &bearer, 2 * CONCURRENCY).await;
    let seat =
        |therapist: &String| Seat { bearer: bearer.clone(), patient: patient.clone(), therapist: therapist.clone() };
    let one_practice: Vec<Seat> = therapists[..CONCURRENCY].iter().map(seat).collect();
    let racing_seats: Vec<Seat> = (0..CONCURRENCY).map(|_| seat(&therapists[CONCURRENCY])).collect();
    // One more practice per client, each with its own admin, therapist and patient.
    let mut spread = Vec::with_capacity(CONCURRENCY);
    for n in 0..CONCURRENCY {
        let (tenant, email) = support::create_named_practice(&db, &hasher, &format!("admin{n}@bench.test")).await;
        let bearer = support::login(&base, tenant, &email).await;
        let (therapists, patient) = staff_practice(&client, &base, &bearer, 1).await;
        spread.push(Seat { bearer, patient, therapist: therapists[0].clone() });
    }

    eprintln!("bench: distinct slots, one practice");
    let distinct = measure(&base, &one_practice, false).await;
    eprintln!("bench: distinct slots, spread over {CONCURRENCY} practices");
    let spread_report = measure(&base, &spread, false).await;
    eprintln!("bench: racing for one slot");
    let racing = measure(&base, &racing_seats, true).await;
    println!(
        "POST /api/v1/appointments, {CONCURRENCY} concurrent clients, {MEASURE:?} (after {WARMUP:?} warm-up), one server worker"
    );
    println!("| workload | requests/s | p50 | p99 | 201 | 409 |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, report) in [
        ("distinct slots, one practice (all succeed)", &distinct),
        ("distinct slots, spread over 16 practices (all succeed)", &spread_report),
        ("racing for one slot, one practice (one wins each round)", &racing),
    ] {
        println!(
            "| {name} | {:.0} | {:.2?} | {:.2?} | {} | {} |",
            report.rps, report.p50, report.p99, report.created, report.refused
        );
    }
    println!("ratio one practice / spread over 16 practices: {:.2}", distinct.rps / spread_report.rps);
    handle.stop(true).await;
}
