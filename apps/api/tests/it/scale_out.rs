//! A scaled-out deployment: two instances on one Postgres and one Redis, and the RLS context
//! behind a transaction pooler.
//!
//! `cargo xtask test` runs these twice: on the plain services, and in its scaled-out run with
//! the instances' Postgres connections through PgBouncer in transaction mode (pool size 1) and
//! Redis as a Redis Cluster. (Two-instance rate limits: `identity::rate_limit_headers_and_one_
//! limit_across_two_instances`; two reminder workers: `appointments::two_workers_at_once_send_
//! each_reminder_exactly_once`; both are in the scaled-out run too.)

use crate::identity::{bearer, create_practice, fast_hashing, login};
use crate::support::TestApp;
use crate::webhooks::{configure, deliver_at_once, stripe_body};
use kernel::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use store_postgres::{DbContext, PoolOptions, begin};

async fn two_instances() -> (TestApp, TestApp) {
    let first = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let second = first.sibling(fast_hashing).await;
    (first, second)
}

#[actix_web::test]
async fn a_session_created_on_one_instance_works_on_the_other() {
    let (first, second) = two_instances().await;
    let practice = create_practice(&first, "Shared").await;
    let session = login(&first, practice.tenant, &practice.admin_email).await;
    let me =
        second.client.get(second.url("/api/v1/me")).header("authorization", bearer(&session)).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], practice.admin_email);
    second.stop().await;
    first.stop().await;
}

#[actix_web::test]
async fn the_same_webhook_delivered_to_both_instances_at_once_is_processed_once() {
    let hooks = crate::webhooks::start().await;
    let (tenant, secrets) = (hooks.tenant, hooks.s.clone());
    let other = hooks.app.sibling(|config| configure(config, tenant, &secrets)).await;
    for round in 0..3 {
        let body = stripe_body(&format!("evt_both_{round}"), "invoice.paid");
        let (on_first, on_other) =
            tokio::join!(deliver_at_once(&hooks, &hooks.app, 10, &body), deliver_at_once(&hooks, &other, 10, &body));
        assert_eq!(on_first + on_other, 1, "round {round}: processed {on_first} + {on_other} times");
    }
    assert_eq!(hooks.received().await, 3);
    assert_eq!(hooks.count("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1").await, 3);
    other.stop().await;
}

#[actix_web::test]
async fn the_audit_chain_verifies_with_both_instances_writing() {
    let (first, second) = two_instances().await;
    let practice = create_practice(&first, "Chained").await;
    let session = login(&first, practice.tenant, &practice.admin_email).await;
    let creates = (0..16).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        let request = app
            .client
            .post(app.url("/api/v1/users"))
            .header("authorization", bearer(&session))
            .json(&json!({ "email": format!("staff{i}@chained.test"), "role": "therapist", "password": crate::identity::PASSWORD }));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
        }
    });
    futures_util::future::join_all(creates).await;
    for app in [&first, &second] {
        let verify: Value = app
            .client
            .get(app.url("/api/v1/audit/verify"))
            .header("authorization", bearer(&session))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(verify["intact"], true, "{verify}");
        // The login and the sixteen users, from both instances, in one chain.
        assert_eq!(verify["entries_checked"], 17, "{verify}");
    }
    second.stop().await;
    first.stop().await;
}

/// What one transaction of a practice's admin sees through the pooler: its server connection,
/// the tenant setting, and the users it can read.
async fn seen_by(pool: &sqlx::PgPool, context: &DbContext) -> (i32, String, i64) {
    let mut tx = begin(pool, context).await.unwrap();
    let seen =
        sqlx::query_as("SELECT pg_backend_pid(), current_setting('app.tenant_id', true), (SELECT count(*) FROM users)")
            .persistent(false)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    seen
}

/// Two practices' clients on one PgBouncer server connection (pool size 1, transaction mode):
/// each transaction sees its own practice only, and one without a practice sees none, whichever
/// client used the server connection last.
#[actix_web::test]
async fn rls_context_never_leaks_between_clients_of_one_pooled_server_connection() {
    let app = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let (alpha, beta) = (create_practice(&app, "Alpha").await, create_practice(&app, "Beta").await);
    for (practice, users) in [(&alpha, 3), (&beta, 1)] {
        let session = login(&app, practice.tenant, &practice.admin_email).await;
        for i in 0..users {
            let response = app
                .client
                .post(app.url("/api/v1/users"))
                .header("authorization", bearer(&session))
                .json(&json!({ "email": format!("u{i}@x.test"), "role": "therapist", "password": crate::identity::PASSWORD }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
    }
    // Two clients of the pooler, as two instances would be: each its own pool of connections.
    let pooled = app.db.pooled_app_url();
    // Debian's PgBouncer 1.18 cannot track named statements.
    let options = PoolOptions {
        max_connections: 4,
        prepared_statements: store_postgres::PreparedStatements::Unnamed,
        ..PoolOptions::default()
    };
    let (client_a, client_b) = (
        store_postgres::connect(&pooled, &options).await.unwrap(),
        store_postgres::connect(&pooled, &options).await.unwrap(),
    );
    let as_alpha = DbContext::user(alpha.tenant, alpha.admin, Role::Admin);
    let as_beta = DbContext::user(beta.tenant, beta.admin, Role::Admin);
    let rounds = |pool: sqlx::PgPool, context: DbContext, expected_tenant: String, expected_users: i64| async move {
        let mut pids = Vec::new();
        for _ in 0..15 {
            let (pid, tenant, users) = seen_by(&pool, &context).await;
            assert_eq!((tenant.as_str(), users), (expected_tenant.as_str(), expected_users));
            let (_, tenant, users) = seen_by(&pool, &DbContext::anonymous()).await;
            assert_eq!((tenant.as_str(), users), ("", 0), "a transaction without a practice saw one");
            pids.push(pid);
        }
        pids
    };
    let (pids_a, pids_b) = tokio::join!(
        rounds(client_a.clone(), as_alpha, alpha.tenant.to_string(), 4),
        rounds(client_b.clone(), as_beta, beta.tenant.to_string(), 2),
    );
    let mut pids: Vec<i32> = pids_a.into_iter().chain(pids_b).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 1, "both clients should share PgBouncer's one server connection: {pids:?}");
    // The statement timeout is the transaction's too, not left on the server connection.
    let mut conn = client_a.acquire().await.unwrap();
    // The simple protocol: one message, so the pooler cannot switch connections halfway.
    let row = sqlx::raw_sql("SELECT current_setting('statement_timeout')").fetch_one(&mut *conn).await.unwrap();
    let timeout: String = sqlx::Row::get(&row, 0);
    assert_eq!(timeout, "0", "a session-level statement_timeout was left on the pooled server connection");
    app.stop().await;
}

/// Redis forgets a practice's webhook claims (a flush, a failover without the last writes): a
/// redelivered event is still recognised, by the Postgres inbox, and processed once. Only this
/// test's keys are deleted (other tests share the Redis, or the Redis Cluster).
#[actix_web::test]
async fn a_redelivered_webhook_is_recognised_after_redis_forgot_its_claims() {
    let hooks = crate::webhooks::start().await;
    let body = stripe_body("evt_forgotten", "invoice.paid");
    assert_eq!(deliver_at_once(&hooks, &hooks.app, 1, &body).await, 1);
    let redis = &hooks.app.redis;
    let store = cache_redis::RedisStore::new(&redis.url, &redis.prefix, std::time::Duration::from_secs(5)).unwrap();
    let mut conn = store.connection().await.unwrap();
    // KEYS goes to every primary of a cluster; each DEL to its key's.
    let keys: Vec<String> =
        deadpool_redis::redis::cmd("KEYS").arg(format!("{}*", redis.prefix)).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty(), "the delivery left its claim in Redis");
    for key in keys {
        let _: i64 = deadpool_redis::redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
    }
    assert_eq!(deliver_at_once(&hooks, &hooks.app, 10, &body).await, 0, "a forgotten claim let a copy through");
    assert_eq!(hooks.received().await, 1);
}
