//! Integration tests of the consent domain, through its public API only.

// Test code: a failed unwrap is a failed test with a clear message. clippy's
// allow-unwrap-in-tests does not cover helper functions outside #[test] in an integration test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod contact;
mod expiry;
mod properties;
mod replay;
mod support;
mod transitions;
