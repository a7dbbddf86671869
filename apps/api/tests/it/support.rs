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
