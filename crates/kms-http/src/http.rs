//! The HTTPS client: reqwest on rustls with ring (the crypto library the workspace already
//! carries), Mozilla's root store plus an optional private CA, no redirects.

use crate::RetryPolicy;
use crypto::KmsError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;

/// A client for one KMS backend. Redirects are not followed: a redirect would carry the token
/// header to wherever it points (reqwest strips `Authorization` on cross-host redirects, but not
/// a custom header such as `X-Vault-Token`).
pub fn client(policy: &RetryPolicy, extra_ca_pem: Option<&str>) -> Result<reqwest::Client, KmsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| KmsError::Other(format!("CA certificate PEM: {e}")))?;
            roots.add(cert).map_err(|e| KmsError::Other(format!("CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(KmsError::Other("CA certificate PEM holds no certificate".to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KmsError::Other(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(policy.connect_timeout)
        .timeout(policy.attempt_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| KmsError::Other(format!("HTTP client: {e}")))
}

/// A request that got no HTTP answer: connection refused or reset, DNS, TLS, or the attempt
/// timed out. Transient (`Unavailable`: the caller may retry), except a certificate the client
/// does not trust (unknown issuer, name mismatch, expired): that stays wrong until an operator
/// fixes the certificate or `ca_cert`, so it is `Other` and not retried. The message carries the
/// whole cause chain ("error sending request" alone does not say what failed).
pub fn transport_error(operation: &str, err: &reqwest::Error) -> KmsError {
    // reqwest's Display names the URL (no secrets: tokens travel in headers, keys in bodies).
    let causes = cause_chain(err);
    if is_certificate_error(err) {
        return KmsError::Other(format!(
            "{operation}: the server's TLS certificate is not trusted: {err}{causes} (check the address's \
             host name, or set ca_cert_file to the CA that issued the certificate)"
        ));
    }
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    KmsError::Unavailable(format!("{operation}: {kind}: {err}{causes}"))
}

/// The sources of `err`, each as ": cause", skipping a cause whose text repeats the previous one.
fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = String::new();
    let mut previous = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if text != previous && !previous.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        previous = text;
        source = cause.source();
    }
    chain
}

/// True when `err`'s cause chain holds rustls's verdict on the server's certificate. On its way up the
/// connector stack the rustls error is wrapped in types `downcast_ref` cannot see through
/// (hyper's and reqwest's private connect errors), so the chain is searched by type where it can
/// be and by rustls's message ("invalid peer certificate: ...", checked by the tests) otherwise.
fn is_certificate_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        let rustls_error = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_)))
            || cause.to_string().contains("invalid peer certificate")
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// `Retry-After` in seconds (the HTTP-date form is ignored; the backoff applies then).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// At most `max` characters of a provider's error text, for log messages.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_only() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn bad_ca_pem_is_refused() {
        let policy = RetryPolicy::default();
        assert!(client(&policy, None).is_ok());
        assert!(client(&policy, Some("not a pem")).is_err());
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate("héllo", 2), "hé...");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
