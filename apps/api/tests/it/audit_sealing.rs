//! The audit sealer of the real `praxis serve`: entries recorded by requests get sealed without
//! anyone asking, and a `kill -9` in the middle of a burst of writes loses no acknowledged write,
//! leaves no write without its audit entry, and the next instance seals what the dead one left.

use crate::identity::{create_practice, login};
use crate::support::TestApp;
use std::time::Duration;
use store_postgres::{DbContext, begin};

/// `praxis serve` on this test app's database, Redis and KMS key, with rate limits out of the
/// way of a burst.
async fn serve(app: &TestApp) -> (tokio::process::Child, String) {
    crate::support::serve_binary(app, |command| {
        // The burst must not be cut short by the per-user limit.
        command
            .env("PRAXIS__RATE_LIMITS__USER_PER_MINUTE", "1000000")
            .env("PRAXIS__RATE_LIMITS__GLOBAL_PER_MINUTE", "1000000")
            .env("PRAXIS__TELEMETRY__LOG_LEVEL", "warn");
    })
    .await
}

/// `(unsealed, sealed)` entries of `tenant`, read as the runtime role.
async fn sealing_state(app: &TestApp, tenant: kernel::TenantId) -> (i64, i64) {
    let mut tx = begin(&app.db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    let counts = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE seq IS NULL), count(*) FILTER (WHERE seq IS NOT NULL) FROM audit_entries",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    counts
}

/// Waits (up to 20 s, a bound on a broken sealer, not a performance claim) until `tenant` has no
/// unsealed entry; returns the counts then.
async fn until_sealed(app: &TestApp, tenant: kernel::TenantId) -> (i64, i64) {
    for _ in 0..400 {
        let state = sealing_state(app, tenant).await;
        if state.0 == 0 {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("entries left unsealed: {:?}", sealing_state(app, tenant).await);
}

#[actix_web::test]
async fn a_kill_in_a_burst_of_writes_loses_nothing_and_the_next_instance_seals_what_was_left() {
    let app = TestApp::start().await;
    let practice = create_practice(&app, "Sealing").await;
    let (mut first, base) = serve(&app).await;
    let session = login(&app, practice.tenant, &practice.admin_email).await;
    let bearer = format!("Bearer {}", session["token"].as_str().unwrap());

    // The running server seals by itself: a write's entry becomes sealed with no one asking.
    let created = app
        .client
        .post(format!("{base}/api/v1/patients"))
        .header("authorization", &bearer)
        .json(&serde_json::json!({ "name": "Before The Burst" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (_, sealed_before) = until_sealed(&app, practice.tenant).await;
    assert!(sealed_before >= 2, "the login and the create are sealed: {sealed_before}");

    // A burst of creates from 8 clients; the server is killed (SIGKILL) in the middle of it.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..8)
        .map(|client_no| {
            let (client, url, bearer, acknowledged) =
                (app.client.clone(), format!("{base}/api/v1/patients"), bearer.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let body = serde_json::json!({ "name": format!("Burst Patient {client_no} {n}") });
                    let Ok(response) = client.post(&url).header("authorization", &bearer).json(&body).send().await
                    else {
                        return;
                    };
                    if response.status() != 201 {
                        return;
                    }
                    let Ok(created) = response.json::<serde_json::Value>().await else { return };
                    acknowledged.lock().unwrap().push(created["id"].as_str().unwrap().to_owned());
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 5, "the burst was under way when the server died: {}", acknowledged.len());

    // Every acknowledged create is stored, and every stored patient has its audit entry.
    let as_admin = DbContext::user(practice.tenant, practice.admin, kernel::Role::Admin);
    let mut tx = begin(&app.db.app_pool, &as_admin).await.unwrap();
    let patients: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM patients").fetch_all(&mut *tx).await.unwrap();
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT resource_id FROM audit_entries WHERE action = 'patient.create' AND resource_id IS NOT NULL",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let patients: Vec<String> = patients.iter().map(uuid::Uuid::to_string).collect();
    for id in &acknowledged {
        assert!(patients.contains(id), "acknowledged patient {id} was lost");
    }
    for id in &patients {
        assert!(audited.contains(id), "patient {id} was written without its audit entry");
    }

    // A new instance's sealer seals whatever the dead one left unsealed, into one valid chain.
    let (mut second, base) = serve(&app).await;
    let (unsealed, sealed) = until_sealed(&app, practice.tenant).await;
    assert_eq!(unsealed, 0);
    assert!(sealed as usize >= 2 + patients.len(), "{sealed} sealed for {} patients", patients.len());
    let report: serde_json::Value = app
        .client
        .get(format!("{base}/api/v1/audit/verify"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["unsealed_entries"], 0, "{report}");
    let listed: serde_json::Value = app
        .client
        .get(format!("{base}/api/v1/audit?limit=200"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = listed["entries"].as_array().unwrap_or_else(|| panic!("{listed}"));
    assert!(entries.iter().all(|entry| entry["sealed"] == true && entry["seq"].is_u64()), "{listed}");
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    app.stop().await;
}
