//! `rediss://`: the store talks TLS to a Redis that accepts nothing else, trusting exactly the
//! CA it is given (or the platform's trust store), and checks the server's name.
//!
//! Each run makes its own CA and server certificate (openssl) and starts its own TLS-only
//! `redis-server` (the binary `PRAXIS_TEST_REDIS_SERVER` names; `cargo xtask test` sets it).

// Helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use cache_redis::{CacheError, Limit, RateLimiter, RedisStore};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_SERVER_VAR: &str = "PRAXIS_TEST_REDIS_SERVER";
const TIMEOUT: Duration = Duration::from_secs(3);

/// A TLS-only Redis with a certificate for `localhost` only, issued by a CA made for this run.
struct TlsRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
    ca_pem: Vec<u8>,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsRedis {
    fn start() -> Self {
        let binary = std::env::var(REDIS_SERVER_VAR).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
            panic!("{REDIS_SERVER_VAR} is not set: run the tests with `cargo xtask test`, which sets it")
        });
        let dir = std::env::temp_dir().join(format!("praxis-redis-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        testkit::tls::make_certificates(&dir);
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem"])
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", "."])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
        let redis = Self { child, dir, port, ca_pem };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS redis-server did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}", self.port)
    }
}

fn install_crypto_provider() {
    // As the server does at start-up; Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn rediss_with_the_servers_ca_works_and_is_the_only_way_in() {
    install_crypto_provider();
    let redis = TlsRedis::start();
    let prefix = format!("praxis-tls-{}:", uuid::Uuid::new_v4().simple());

    let store = RedisStore::with_ca(&redis.url("rediss", "localhost"), redis.ca_pem.clone(), &prefix, TIMEOUT).unwrap();
    store.ping().await.expect("TLS with the issuing CA");
    let limiter = RateLimiter::new(store.clone());
    let limit = Limit::new(2, Duration::from_secs(60));
    assert_eq!(limiter.check("tls", "client", limit).await.unwrap().remaining, 1, "scripts run over TLS");
    assert_eq!(limiter.check("tls", "client", limit).await.unwrap().remaining, 0);

    // The name is checked: the certificate is for localhost, not for the address.
    let by_address = RedisStore::with_ca(&redis.url("rediss", "127.0.0.1"), redis.ca_pem.clone(), &prefix, TIMEOUT);
    assert!(matches!(by_address.unwrap().ping().await, Err(CacheError::Unavailable(_))));
    // The platform's trust store does not know this run's CA.
    let system_roots = RedisStore::new(&redis.url("rediss", "localhost"), &prefix, TIMEOUT).unwrap();
    assert!(matches!(system_roots.ping().await, Err(CacheError::Unavailable(_))));
    // Without TLS the server does not answer at all.
    let plain = RedisStore::new(&redis.url("redis", "localhost"), &prefix, TIMEOUT).unwrap();
    assert!(plain.ping().await.is_err());
}

#[test]
fn a_ca_certificate_is_refused_for_a_url_without_tls() {
    let refused = RedisStore::with_ca("redis://localhost:6379", b"-----BEGIN CERTIFICATE-----".to_vec(), "p:", TIMEOUT);
    assert!(matches!(refused, Err(CacheError::InvalidUrl(message)) if message.contains("rediss://")));
}
