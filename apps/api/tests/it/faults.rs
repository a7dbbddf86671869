//! Dependencies failing under load, from the outside: clients may see 503 with `Retry-After`
//! while a dependency is away, never a 500 for it, and the service recovers by itself.

use crate::identity::{bearer, create_practice, fast_hashing, login};
use crate::kms_backends::{openbao, openbao_transit_key};
use crate::support::{TestApp, assert_problem};
use api::config::{Config, KmsBackend};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// A TCP proxy in front of a real server that can be made to hang: while stalled it accepts
/// connections and reads what clients send, and forwards nothing, so a client waits as it does
/// for a KMS that hangs (a stuck load balancer, a server that stopped answering).
struct StallingProxy {
    url: String,
    stalled: Arc<AtomicBool>,
}

impl StallingProxy {
    /// A proxy to the HTTP server at `upstream` (`http://host:port`).
    async fn start(upstream: &str) -> Self {
        let upstream = reqwest::Url::parse(upstream).unwrap();
        let upstream = format!("{}:{}", upstream.host_str().unwrap(), upstream.port_or_known_default().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        actix_web::rt::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                actix_web::rt::spawn(Self::pipe(client, upstream.clone(), flag.clone()));
            }
        });
        Self { url, stalled }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }

    async fn pipe(client: TcpStream, upstream: String, stalled: Arc<AtomicBool>) {
        let Ok(server) = TcpStream::connect(&upstream).await else { return };
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let forward = async move {
            let mut buffer = [0u8; 8192];
            loop {
                let read = client_read.read(&mut buffer).await?;
                if read == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                while stalled.load(Ordering::SeqCst) {
                    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                }
                server_write.write_all(&buffer[..read]).await?;
            }
        };
        let back = tokio::io::copy(&mut server_read, &mut client_write);
        let _ = tokio::join!(forward, back);
    }
}

/// `[kms]` of a Vault primary at `address` (OpenBao, or a proxy in front of it).
fn on_vault(config: &mut Config, address: &str, mount: &str, token: &str) {
    fast_hashing(config);
    config.rate_limits.user_per_minute = 100_000;
    config.kms.backend = KmsBackend::Vault;
    config.kms.vault.address = address.to_owned();
    config.kms.vault.mount = mount.to_owned();
    config.kms.vault.key_name = "praxis".to_owned();
    config.kms.vault.token = Some(kernel::Secret::new(token.to_owned()));
}

/// How many audit entries of `actions` name `resource_id` in the practice.
async fn audited(app: &TestApp, tenant: kernel::TenantId, actions: &[&str], resource_id: &str) -> i64 {
    let mut tx = store_postgres::begin(&app.db.owner_pool, &store_postgres::DbContext::operator(tenant)).await.unwrap();
    let actions: Vec<String> = actions.iter().map(|a| (*a).to_owned()).collect();
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = ANY($2) AND resource_id = $3",
    )
    .bind(tenant.as_uuid())
    .bind(&actions)
    .bind(resource_id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    count
}

/// A KMS that hangs holds the requests that need it for the KMS's retry budget, and nothing
/// else: no database connection is held while it is waited for. With a pool of 2 and four
/// requests stuck on unwraps, requests that need only the database are answered at once; the
/// stuck ones end in 503 with `Retry-After`, having written nothing.
#[actix_web::test]
async fn a_hung_kms_holds_no_database_connection() {
    let (address, root_token) = openbao();
    api::cli::install_tls_provider();
    let mount = openbao_transit_key(&address, &root_token).await;
    let app = TestApp::start_with(|c| on_vault(c, &address, &mount, &root_token), api::server::no_extra_routes).await;
    let proxy = StallingProxy::start(&address).await;
    // A second instance, its KMS behind the proxy, its DEK cache empty, its pool small.
    let sibling = app
        .sibling(|config| {
            on_vault(config, &proxy.url, &mount, &root_token);
            config.database.max_connections = 2;
        })
        .await;
    let practice = create_practice(&app, "Stalled").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let bearer = bearer(&admin);
    let mut patients = Vec::new();
    for name in ["Cached Patient", "Second Patient", "Third Patient", "Fourth Patient"] {
        let response = app
            .client
            .post(app.url("/api/v1/patients"))
            .header("authorization", &bearer)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        patients.push(response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let get = |path: String| sibling.client.get(sibling.url(&path)).header("authorization", &bearer).send();
    // The sibling has the first patient's DEK in its cache, and knows the caller.
    assert_eq!(get(format!("/api/v1/patients/{}", patients[0])).await.unwrap().status(), 200);
    assert_eq!(get("/api/v1/me".to_owned()).await.unwrap().status(), 200);

    proxy.stall(true);
    let started = Instant::now();
    let mut stuck = Vec::new();
    for id in &patients[1..] {
        let request =
            sibling.client.get(sibling.url(&format!("/api/v1/patients/{id}"))).header("authorization", &bearer);
        stuck.push(actix_web::rt::spawn(request.send()));
    }
    let update = sibling
        .client
        .patch(sibling.url(&format!("/api/v1/patients/{}", patients[1])))
        .header("authorization", &bearer)
        .json(&serde_json::json!({ "name": "Renamed While Stalled" }));
    stuck.push(actix_web::rt::spawn(update.send()));
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;

    // Four requests wait for the KMS; the pool of two still serves the others at once (a
    // connection held meanwhile would make them wait the pool's 5 s acquire timeout, then 503).
    for path in
        ["/api/v1/me".to_owned(), format!("/api/v1/patients/{}", patients[0]), "/api/v1/appointments".to_owned()]
    {
        let asked = Instant::now();
        let response = get(path.clone()).await.unwrap();
        let took = asked.elapsed();
        assert_eq!(response.status(), 200, "{path} while the KMS hangs: {:?}", response.text().await);
        assert!(took < Duration::from_secs(2), "{path} took {took:?} while the KMS hangs");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "the stuck requests must still be waiting");

    // The stuck ones end with the KMS's retry budget: 503 with Retry-After, nothing written.
    for request in stuck {
        let response = request.await.unwrap().unwrap();
        assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
        assert_problem(response, 503, "urn:praxis:problem:service-unavailable").await;
    }
    for id in &patients[1..] {
        assert_eq!(audited(&app, practice.tenant, &["patient.read", "patient.update", "key.unwrap"], id).await, 0);
    }

    // The KMS answers again: served without a restart, the update was never applied.
    proxy.stall(false);
    let response = get(format!("/api/v1/patients/{}", patients[1])).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["name"], "Second Patient");
    assert_eq!(audited(&app, practice.tenant, &["key.unwrap"], &patients[1]).await, 1);
    assert_eq!(audited(&app, practice.tenant, &["patient.read"], &patients[1]).await, 1);
    sibling.stop().await;
    app.stop().await;
}
