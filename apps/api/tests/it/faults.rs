//! Dependencies failing under load, from the outside: clients may see 503 with `Retry-After`
//! while a dependency is away, never a 500 for it, and the service recovers by itself.

use crate::identity::{bearer, create_practice, fast_hashing, login};
use crate::support::TestApp;
use std::collections::BTreeMap;

/// Every session of the database is terminated again and again (what a Postgres fast shutdown, a
/// restart or a failover does to each connection: 57P01, then closed sockets) while authenticated
/// requests run. Bounded: 4 clients x 60 requests, 12 rounds of terminations.
#[actix_web::test]
async fn a_database_that_drops_its_connections_gives_503_never_500() {
    let app = TestApp::start_with(
        |config| {
            fast_hashing(config);
            // One caller sends every request: the per-user limit is not what this test is about.
            config.rate_limits.user_per_minute = 100_000;
        },
        api::server::no_extra_routes,
    )
    .await;
    let practice = create_practice(&app, "Alpha").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let authorization = bearer(&admin);

    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = app.client.clone();
        let url = app.url("/api/v1/users");
        let authorization = authorization.clone();
        clients.push(actix_web::rt::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..60 {
                let response = client.get(&url).header("authorization", &authorization).send().await.unwrap();
                let status = response.status().as_u16();
                if status == 503 {
                    assert!(response.headers().get("retry-after").is_some(), "a 503 without Retry-After");
                }
                statuses.push(status);
            }
            statuses
        }));
    }
    let mut terminated = 0;
    for _ in 0..12 {
        terminated += app.db.terminate_connections().await;
        actix_web::rt::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for client in clients {
        for status in client.await.unwrap() {
            *counts.entry(status).or_default() += 1;
        }
    }
    assert!(terminated > 0, "the test ended no database session, so it proved nothing");
    assert!(counts.keys().all(|status| *status == 200 || *status == 503), "statuses under faults: {counts:?}");

    // Recovered without a restart: a client that retries (as `Retry-After` asks) is served again.
    // Each pooled connection the database ended answers at most one 503 before the pool drops
    // it, so the retries are bounded by the pool size.
    let mut recovered = false;
    for _ in 0..=app.config.database.max_connections {
        let response =
            app.client.get(app.url("/api/v1/users")).header("authorization", &authorization).send().await.unwrap();
        match response.status().as_u16() {
            200 => {
                recovered = true;
                break;
            }
            503 => actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await,
            other => panic!("after the faults: {other}"),
        }
    }
    assert!(recovered, "still unavailable after one retry per pooled connection");
    app.stop().await;
}
