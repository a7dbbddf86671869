//! What the HTTP-based KMS adapters (`kms-vault`, `kms-azure`) and the reminder notifiers share:
//! the HTTPS client (reqwest on rustls with ring, Mozilla's roots plus an optional private CA, no
//! redirects) and bounded retries with backoff. One implementation, so a fix to either reaches
//! every caller.

mod http;
mod retry;
#[cfg(feature = "test-server")]
pub mod test_server;

pub use http::{client, retry_after, transport_error, truncate};
pub use retry::{Attempt, RetryPolicy, run};
