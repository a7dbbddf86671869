//! The metrics over HTTP, in a test binary of their own: the instruments are process-wide, so the
//! amounts counted here are this binary's traffic only (the `it` binary never installs them).
//!
//! Drives failures through the real API (wrong passwords, forged and stale webhooks, a Redis
//! that is not there), then reads the Prometheus page on its own listener: the counters moved
//! by exactly the expected amounts, no label carries an id, an address or an e-mail, and the
//! page is not served on the API's port.

// A failed unwrap in a test is a failed test with its message: exactly what a test should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use api::AppState;
use api::config::Config;
use api::config::webhooks::{StripeWebhook, TenantWebhooks};
use kernel::{Role, Secret, SystemClock, TenantId, UserId};
use ring::hmac;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use store_postgres::{DbContext, begin, identity as accounts};
use testkit::{TestDb, TestRedis};

const PASSWORD: &str = "violet tram elbow quiz 42";

struct Server {
    addr: SocketAddr,
    state: AppState,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn test_config(db: &TestDb, redis_url: &str, prefix: &str) -> Config {
    let mut config = Config::default();
    config.database.url = Some(Secret::new(db.app_url.clone()));
    config.redis.url = Some(Secret::new(redis_url.to_owned()));
    config.redis.key_prefix = prefix.to_owned();
    config.server.workers = 1;
    config.auth.argon2_memory_kib = 1024;
    config.auth.argon2_iterations = 1;
    config.kms.local.key_file = std::env::temp_dir().join(format!("praxis-test-{}.key", uuid::Uuid::new_v4().simple()));
    config
}

fn serve(config: Config) -> Server {
    let state = AppState::from_config(Arc::new(config), Arc::new(SystemClock)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(api::server::start(state.clone(), listener, api::server::no_extra_routes).unwrap());
    Server { addr, state }
}

/// A practice and its admin, written as `praxis tenants create` does.
async fn create_practice(db: &TestDb, email: &str) -> (TenantId, UserId) {
    let (tenant, admin) = (TenantId::new(), UserId::new());
    let hasher =
        identity::PasswordHasher::new(identity::Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 })
            .unwrap();
    let mut tx = begin(&db.app_pool, &DbContext::user(tenant, admin, Role::Admin)).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'Metrics')")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    let user = accounts::NewUser {
        id: admin,
        tenant,
        email: email.to_owned(),
        role: Role::Admin,
        patient: None,
        password_hash: hasher.hash(PASSWORD).unwrap(),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    accounts::insert_user(&mut tx, &user).await.unwrap();
    tx.commit().await.unwrap();
    (tenant, admin)
}

fn stripe_header(secret: &str, t: i64, body: &str) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(tag.as_ref()))
}

fn stripe_body(id: &str) -> String {
    json!({
        "id": id, "object": "event", "type": "customer.created", "livemode": false, "created": now(),
        "data": { "object": { "id": "cus_1", "object": "customer", "metadata": {} } }
    })
    .to_string()
}

fn now() -> i64 {
    kernel::Clock::now(&SystemClock).unix_timestamp()
}

/// The page's samples: `name{labels}` -> value.
async fn scrape(client: &reqwest::Client, metrics_addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let response = client.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    let samples = page
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect();
    (page, samples)
}

/// The sum of the samples of `name` whose labels include every one of `labels` (`key="value"`).
fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series.as_str(), ""));
            series_name == name && labels.iter().all(|label| series_labels.contains(label))
        })
        .map(|(_, value)| value)
        .sum()
}

fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    sum(after, name, labels) - sum(before, name, labels)
}

/// Every label value on the page: `(name, value)`.
fn label_values(page: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for line in page.lines().filter(|line| !line.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else { continue };
        let Some((labels, _)) = rest.rsplit_once('}') else { continue };
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once("=\"").unwrap();
            found.push((name.trim_start_matches(',').to_owned(), value.trim_end_matches('"').to_owned()));
        }
    }
    found
}

#[actix_web::test]
async fn security_metrics_count_failures_driven_over_http() {
    api::cli::install_tls_provider();
    let exporter = telemetry::metrics::install(&telemetry::metrics::MetricsConfig {
        prometheus: true,
        otlp_endpoint: None,
        otlp_interval: std::time::Duration::from_secs(60),
        service_name: "praxis-test".into(),
    })
    .unwrap()
    .unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    actix_web::rt::spawn(api::metrics::start_server(Arc::new(exporter), metrics_listener).unwrap());
    let client = reqwest::Client::new();

    // A practice with a Stripe endpoint, on a healthy Redis.
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let email = format!("admin-{}@metrics.test", uuid::Uuid::new_v4().simple());
    let (tenant, admin) = create_practice(&db, &email).await;
    let stripe_secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
    let mut config = test_config(&db, &redis.url, &redis.prefix);
    config.rate_limits.login_failures = 5;
    config.webhooks.public_base_url = Some("https://praxis.example.test".into());
    config.webhooks.tenants.insert(
        tenant.to_string(),
        TenantWebhooks {
            stripe: Some(StripeWebhook {
                signing_secrets: vec![Secret::new(stripe_secret.clone())],
                ..StripeWebhook::default()
            }),
            ..TenantWebhooks::default()
        },
    );
    let api = serve(config);

    // The same deployment with a Redis that is not there (a closed port): its limiter falls
    // back to the in-process one. Its gauges are the ones registered (one state per process).
    let closed_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cut_off = serve(test_config(&db, &format!("redis://127.0.0.1:{closed_port}"), &redis.prefix));
    api::metrics::observe(&cut_off.state);

    let (_, before) = scrape(&client, metrics_addr).await;
    assert_eq!(sum(&before, "praxis_rate_limit_redis_fallback", &[]), 0.0, "Redis not tried yet");

    // 12 wrong passwords for one account: 5 refused as wrong (the 5th reaches the login limit:
    // one lockout), 7 refused by the limit; the 11th failure crosses the suspicious-activity
    // threshold (10 in 5 minutes) once.
    for _ in 0..12 {
        let response = client
            .post(api.url("/api/v1/auth/login"))
            .json(&json!({ "practice_id": tenant, "email": email, "password": "not the password" }))
            .send()
            .await
            .unwrap();
        assert!([401, 429].contains(&response.status().as_u16()), "{}", response.status());
    }

    // Webhooks: 3 forged (a secret that is not the practice's), 1 stale (signed 10 minutes ago),
    // 1 verified, and the same delivery again (a duplicate).
    let hook = |header: String, body: String| {
        client
            .post(api.url(&format!("/webhooks/stripe/{tenant}")))
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body)
            .send()
    };
    for i in 0..3 {
        let body = stripe_body(&format!("evt_forged_{i}"));
        let response = hook(stripe_header("whsec_forger", now(), &body), body).await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let body = stripe_body("evt_stale");
    assert_eq!(hook(stripe_header(&stripe_secret, now() - 600, &body), body).await.unwrap().status(), 401);
    let body = stripe_body("evt_good");
    for _ in 0..2 {
        let response = hook(stripe_header(&stripe_secret, now(), &body), body.clone()).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    // Through the instance without Redis: served on the fallback limiter.
    let response = client.get(cut_off.url("/api/v1/patients")).send().await.unwrap();
    assert_eq!(response.status(), 401);

    // The page is not on the API's port.
    for server in [&api, &cut_off] {
        assert_eq!(client.get(server.url("/metrics")).send().await.unwrap().status(), 404);
    }

    let (page, after) = scrape(&client, metrics_addr).await;
    let failures = "praxis_auth_login_failures_total";
    assert_eq!(moved(&before, &after, failures, &["reason=\"invalid_credentials\""]), 5.0, "{page}");
    assert_eq!(moved(&before, &after, failures, &["reason=\"rate_limited\""]), 7.0, "{page}");
    assert_eq!(moved(&before, &after, "praxis_auth_login_lockouts_total", &[]), 1.0, "{page}");
    assert_eq!(
        moved(&before, &after, "praxis_security_suspicious_activity_total", &["subject=\"account\""]),
        1.0,
        "{page}"
    );
    assert_eq!(moved(&before, &after, "praxis_rate_limit_refusals_total", &["limiter=\"login\""]), 7.0, "{page}");
    let verifications = "praxis_webhook_verifications_total";
    for (outcome, count) in [("forged", 3.0), ("stale", 1.0), ("verified", 1.0), ("duplicate", 1.0)] {
        let labels = ["provider=\"stripe\"", &format!("outcome=\"{outcome}\"")];
        assert_eq!(moved(&before, &after, verifications, &labels), count, "{outcome}: {page}");
    }
    let requests = "http_server_request_duration_seconds_count";
    let login_route = ["http_route=\"/api/v1/auth/login\"", "http_request_method=\"POST\""];
    assert_eq!(
        moved(&before, &after, requests, &[login_route[0], login_route[1], "http_response_status_class=\"4xx\""]),
        12.0,
        "{page}"
    );
    // The route template, never the path with the practice id in it.
    assert!(page.contains("http_route=\"/webhooks/{provider}/{practice_id}\""), "{page}");
    // Every failed login and suspicious activity is an audit entry (plus the webhook rejections).
    assert!(moved(&before, &after, "praxis_audit_appends_total", &[]) >= 13.0, "{page}");
    assert_eq!(sum(&after, "praxis_rate_limit_redis_fallback", &[]), 1.0, "{page}");
    assert!(sum(&after, "db_client_connection_max", &[]) >= 1.0, "{page}");
    assert!(moved(&before, &after, "praxis_db_transaction_begin_duration_seconds_count", &[]) >= 12.0, "{page}");

    // No personal data and no unbounded values in any label.
    for forbidden in [email.as_str(), &tenant.to_string(), &admin.to_string(), "127.0.0.1", "evt_"] {
        assert!(!page.contains(forbidden), "the metrics page carries {forbidden:?}: {page}");
    }
    let uuid_like = regex_lite_uuid;
    for (name, value) in label_values(&page) {
        assert!(!uuid_like(&value), "label {name}={value:?} looks like an id");
        assert!(!value.contains('@'), "label {name}={value:?} looks like an e-mail");
        assert!(value.parse::<std::net::IpAddr>().is_err(), "label {name}={value:?} is an address");
    }
}

/// Whether `value` holds a UUID (8-4-4-4-12 hex digits).
fn regex_lite_uuid(value: &str) -> bool {
    value.split(|c: char| !c.is_ascii_hexdigit() && c != '-').any(|word| uuid::Uuid::parse_str(word).is_ok())
}
