//! The principal cache and revocation across instances: two servers on one database and one
//! Redis, each caching the principals it verified; a revocation through one (or through the
//! `praxis` CLI) is refused by the other on its very next request.

use crate::identity::{PASSWORD, bearer, create_practice, create_user, fast_hashing, login, login_response};
use crate::operator_cli::praxis;
use crate::support::TestApp;
use api::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use store_postgres::{DbContext, begin};

/// Each instance keeps a verified principal for 30 s (the longest default-like TTL): a test that
/// passes does so because of the revocation markers, not because an entry expired.
fn long_cache(config: &mut Config) {
    fast_hashing(config);
    config.auth.principal_cache_ttl_ms = 30_000;
}

async fn me(app: &TestApp, authorization: &str) -> StatusCode {
    app.client.get(app.url("/api/v1/me")).header("authorization", authorization).send().await.unwrap().status()
}

async fn audit_with_key(app: &TestApp, key: &str) -> StatusCode {
    app.client.get(app.url("/api/v1/audit")).header("x-api-key", key).send().await.unwrap().status()
}

/// Requests on both instances, so each has the principal cached.
async fn warm(a: &TestApp, b: &TestApp, authorization: &str) {
    for app in [a, b, a, b] {
        assert_eq!(me(app, authorization).await, StatusCode::OK);
    }
}

#[actix_web::test]
async fn a_revocation_through_one_instance_is_refused_by_the_other_on_its_next_request() {
    let a = TestApp::start_with(long_cache, api::server::no_extra_routes).await;
    let b = a.sibling(long_cache).await;
    let practice = create_practice(&a, "Alpha").await;
    let admin = login(&a, practice.tenant, &practice.admin_email).await;
    let created = create_user(&a, &admin, "therapist@alpha.test", "therapist").await;

    // Logout through A.
    let session = login(&a, practice.tenant, "therapist@alpha.test").await;
    warm(&a, &b, &bearer(&session)).await;
    let response =
        a.client.post(a.url("/api/v1/auth/logout")).header("authorization", bearer(&session)).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(me(&b, &bearer(&session)).await, StatusCode::UNAUTHORIZED, "logout");
    assert_eq!(me(&a, &bearer(&session)).await, StatusCode::UNAUTHORIZED, "logout");

    // Password change through A ends every session of the account, also one never used on A.
    let first = login(&a, practice.tenant, "therapist@alpha.test").await;
    let second = login(&b, practice.tenant, "therapist@alpha.test").await;
    warm(&a, &b, &bearer(&first)).await;
    assert_eq!(me(&b, &bearer(&second)).await, StatusCode::OK);
    let response = a
        .client
        .post(a.url("/api/v1/me/password"))
        .header("authorization", bearer(&first))
        .json(&json!({ "current_password": PASSWORD, "new_password": "new marble harbour seven" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(me(&b, &bearer(&first)).await, StatusCode::UNAUTHORIZED, "password change");
    assert_eq!(me(&b, &bearer(&second)).await, StatusCode::UNAUTHORIZED, "password change, other session");

    // A session started after the password change works on both, though the marker is still set.
    let response = login_response(&b, practice.tenant, "therapist@alpha.test", "new marble harbour seven").await;
    assert_eq!(response.status(), 200);
    let third: Value = response.json().await.unwrap();
    warm(&a, &b, &bearer(&third)).await;

    // Disabling the account through A.
    let response = a
        .client
        .post(a.url(&format!("/api/v1/users/{}/disable", created["id"].as_str().unwrap())))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(me(&b, &bearer(&third)).await, StatusCode::UNAUTHORIZED, "user disable");

    // Revoking an API key through A.
    let response = a
        .client
        .post(a.url("/api/v1/api-keys"))
        .header("authorization", bearer(&admin))
        .json(&json!({ "name": "billing sync", "scopes": ["audit:read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let key: Value = response.json().await.unwrap();
    let api_key = key["api_key"].as_str().unwrap();
    for app in [&a, &b, &a, &b] {
        assert_eq!(audit_with_key(app, api_key).await, StatusCode::OK);
    }
    let response = a
        .client
        .delete(a.url(&format!("/api/v1/api-keys/{}", key["id"].as_str().unwrap())))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(audit_with_key(&b, api_key).await, StatusCode::UNAUTHORIZED, "api key revoke");

    // `praxis sessions revoke`, a third process: both instances refuse the admin's session.
    warm(&a, &b, &bearer(&admin)).await;
    let tenant = practice.tenant.to_string();
    let output = praxis(&a, &["sessions", "revoke", "--tenant", &tenant, "--user", &practice.admin_email]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(me(&b, &bearer(&admin)).await, StatusCode::UNAUTHORIZED, "praxis sessions revoke");
    assert_eq!(me(&a, &bearer(&admin)).await, StatusCode::UNAUTHORIZED, "praxis sessions revoke");
    b.stop().await;
    a.stop().await;
}

/// Ends a session in the database only, as a revocation whose markers could not be written
/// would leave it.
async fn revoke_in_database_only(app: &TestApp, practice: &crate::identity::Practice) {
    let context = DbContext::user(practice.tenant, practice.admin, kernel::Role::Admin);
    let mut tx = begin(&app.db.app_pool, &context).await.unwrap();
    let ended = sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(practice.admin.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    tx.commit().await.unwrap();
    assert_eq!(ended, 1);
}

/// What the cache changes, observed from outside: a session ended in the database without a
/// marker (what a failed marker write leaves) is still accepted by an instance that cached it,
/// for at most its TTL, while an instance with the cache off refuses it at once.
#[actix_web::test]
async fn a_cached_principal_is_answered_without_the_database_for_at_most_its_ttl() {
    let cached = TestApp::start_with(
        |config| {
            fast_hashing(config);
            config.auth.principal_cache_ttl_ms = 1_500;
        },
        api::server::no_extra_routes,
    )
    .await;
    let uncached = cached
        .sibling(|config| {
            fast_hashing(config);
            config.auth.principal_cache_ttl_ms = 0;
        })
        .await;
    let practice = create_practice(&cached, "Alpha").await;
    let session = login(&cached, practice.tenant, &practice.admin_email).await;
    warm(&cached, &uncached, &bearer(&session)).await;
    let revoked_at = std::time::Instant::now();
    revoke_in_database_only(&cached, &practice).await;

    assert_eq!(me(&uncached, &bearer(&session)).await, StatusCode::UNAUTHORIZED);
    // Served from the cache: the database would have refused it.
    assert_eq!(me(&cached, &bearer(&session)).await, StatusCode::OK);
    let mut refused_after = None;
    while revoked_at.elapsed() < std::time::Duration::from_secs(5) {
        if me(&cached, &bearer(&session)).await == StatusCode::UNAUTHORIZED {
            refused_after = Some(revoked_at.elapsed());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused_after = refused_after.expect("the cached session was never refused");
    assert!(refused_after <= std::time::Duration::from_millis(1_500 + 500), "{refused_after:?}");
    uncached.stop().await;
    cached.stop().await;
}

/// An instance that cannot reach Redis cannot read the markers: it asks the database on every
/// request, so a revocation through another instance is refused on its next request.
#[actix_web::test]
async fn an_instance_without_redis_still_honours_a_revocation_at_once() {
    let a = TestApp::start_with(long_cache, api::server::no_extra_routes).await;
    let without_redis = a
        .sibling(|config| {
            long_cache(config);
            config.redis.url = Some(kernel::Secret::new("redis://127.0.0.1:1".into()));
            config.redis.timeout_ms = 300;
        })
        .await;
    let practice = create_practice(&a, "Alpha").await;
    // Login needs Redis (its failure counters fail closed): through A.
    let session = login(&a, practice.tenant, &practice.admin_email).await;
    warm(&a, &without_redis, &bearer(&session)).await;
    let response =
        a.client.post(a.url("/api/v1/auth/logout")).header("authorization", bearer(&session)).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(me(&without_redis, &bearer(&session)).await, StatusCode::UNAUTHORIZED);
    without_redis.stop().await;
    a.stop().await;
}

/// The configuration refuses a cache TTL the revocation markers would not outlive.
#[test]
fn a_principal_cache_ttl_past_the_markers_is_refused() {
    let mut config = Config::default();
    config.auth.principal_cache_ttl_ms = 60_001;
    let problems = config.validate();
    assert!(problems.iter().any(|p| p.field == "auth.principal_cache_ttl_ms"), "{problems:?}");
    config.auth.principal_cache_ttl_ms = 60_000;
    assert!(!config.validate().iter().any(|p| p.field == "auth.principal_cache_ttl_ms"));
}
