//! A KMS address whose certificate the client does not trust: the error names the certificate
//! problem, and the retry loop gives up at once (a certificate does not fix itself).
//!
//! Each run makes its own CA and a server certificate for `localhost` with the openssl command
//! (`testkit::tls`, shared with the Redis TLS tests), and serves TLS from a thread with rustls.

#![expect(clippy::unwrap_used, reason = "helpers outside #[test] functions: a failed set-up is a failed test")]

use kms_http::{Attempt, RetryPolicy, client, run, transport_error};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A CA, and a server certificate it issued for `localhost` (not for 127.0.0.1), in a fresh
/// directory.
fn make_certificates(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kms-http-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    testkit::tls::make_certificates(&dir);
    dir
}

/// Serves TLS with the certificate in `dir` on 127.0.0.1 until the test ends; returns the port.
/// Each connection gets a handshake and nothing else (the client gives up during it).
fn serve_tls(dir: &Path) -> u16 {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(mut connection) = rustls::ServerConnection::new(config.clone()) else { continue };
            // Runs the handshake until the client aborts it.
            while connection.complete_io(&mut stream).is_ok() && connection.is_handshaking() {}
        }
    });
    port
}

/// One operation through the retry loop; returns its error and how many attempts it made.
async fn probe(http: &reqwest::Client, url: &str) -> (crypto::KmsError, u32) {
    let attempts = AtomicU32::new(0);
    let policy = RetryPolicy::default();
    let result = run(&policy, "probe", || async {
        attempts.fetch_add(1, Ordering::SeqCst);
        match http.get(url).send().await {
            Ok(_) => Attempt::Done(Ok(())),
            Err(e) => Attempt::fail(transport_error("probe", &e), None),
        }
    })
    .await;
    (result.unwrap_err(), attempts.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_named_and_not_retried() {
    let dir = make_certificates("unknown-ca");
    let port = serve_tls(&dir);
    let http = client(&RetryPolicy::default(), None).unwrap();
    let started = Instant::now();
    let (error, attempts) = probe(&http, &format!("https://localhost:{port}/v1/sys/health")).await;
    assert_eq!(attempts, 1, "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(!error.is_retryable(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("certificate is not trusted") && message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("ca_cert_file"), "{message}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_named_and_not_retried() {
    let dir = make_certificates("name-mismatch");
    let port = serve_tls(&dir);
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let http = client(&RetryPolicy::default(), Some(&ca)).unwrap();
    // The certificate is for localhost, the address says 127.0.0.1.
    let (error, attempts) = probe(&http, &format!("https://127.0.0.1:{port}/v1/sys/health")).await;
    assert_eq!(attempts, 1, "{error}");
    let message = error.to_string();
    assert!(message.contains("certificate is not trusted") && message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn a_refused_connection_is_still_transient_and_says_why() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let http = client(&RetryPolicy::default(), None).unwrap();
    let (error, attempts) = probe(&http, &format!("https://127.0.0.1:{port}/")).await;
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(attempts, RetryPolicy::default().max_attempts);
    // The cause chain, not only "error sending request".
    assert!(error.to_string().to_lowercase().contains("refused"), "{error}");
}
