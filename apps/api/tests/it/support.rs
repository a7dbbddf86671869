use api::AppState;
use api::config::Config;
use api::server::ExtraRoutes;
use kernel::{Secret, SystemClock};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use testkit::{TestDb, TestRedis};

/// A running Praxis server with its own database and Redis namespace.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub redis: TestRedis,
    /// The configuration the server runs with (its KMS key file, to build a second state).
    pub config: Config,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, api::server::no_extra_routes).await
    }

    /// Starts the server after `adjust` has edited the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config), extra: ExtraRoutes) -> Self {
        Self::start_on(TestDb::new().await, TestRedis::new(), adjust, extra).await
    }

    /// A second instance sharing this one's database and Redis namespace (a scaled-out deployment).
    pub async fn sibling(&self, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(self.db.clone(), self.redis.clone(), adjust, api::server::no_extra_routes).await
    }

    async fn start_on(db: TestDb, redis: TestRedis, adjust: impl FnOnce(&mut Config), extra: ExtraRoutes) -> Self {
        api::cli::install_tls_provider();
        let mut config = Config::default();
        config.database.url = Some(Secret::new(db.app_url.clone()));
        config.redis.url = Some(Secret::new(redis.url.clone()));
        config.redis.key_prefix = redis.prefix.clone();
        config.server.workers = 1;
        if testkit::app_via_pooler() {
            config.database.prepared_statements = api::config::PreparedStatementsSetting::Unnamed;
        }
        // The local development KMS key of this test server, outside the source tree.
        config.kms.local.key_file =
            std::env::temp_dir().join(format!("praxis-test-{}.key", uuid::Uuid::new_v4().simple()));
        adjust(&mut config);
        let state = AppState::from_config(Arc::new(config.clone()), Arc::new(SystemClock)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = api::server::start(state, listener, extra).unwrap();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { addr, client, db, redis, config, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// `praxis serve`, the real binary, on `app`'s database, Redis and KMS key file, on a free port
/// with one worker, no reminder worker and no metrics page (parallel tests would compete for its
/// port); `adjust` adds settings and says where the output goes (discarded unless it does).
/// Returns the process and its base URL once `/health/ready` answers 200.
pub async fn serve_binary(
    app: &TestApp,
    adjust: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_praxis"));
    command
        .arg("serve")
        .env_clear()
        .env("PRAXIS__DATABASE__URL", &app.db.app_url)
        .env("PRAXIS__DATABASE__PREPARED_STATEMENTS", testkit::prepared_statements_setting())
        .env("PRAXIS__REDIS__URL", &app.redis.url)
        .env("PRAXIS__REDIS__KEY_PREFIX", &app.redis.prefix)
        .env("PRAXIS__KMS__LOCAL__KEY_FILE", &app.config.kms.local.key_file)
        .env("PRAXIS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("PRAXIS__SERVER__WORKERS", "1")
        .env("PRAXIS__REMINDERS__ENABLED", "false")
        .env("PRAXIS__TELEMETRY__METRICS_BIND", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    adjust(&mut command);
    let mut child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        assert!(child.try_wait().unwrap().is_none(), "praxis serve exited");
        if let Ok(response) = app.client.get(format!("{base}/health/ready")).send().await
            && response.status() == 200
        {
            return (child, base);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("praxis serve did not get ready");
}

/// Asserts the response is RFC 9457 problem+json with the given status and `type`, and returns it.
pub async fn assert_problem(response: reqwest::Response, status: u16, problem_type: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], problem_type, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    body
}
