//! Integration tests of the audit crate's public API: one test binary, modules by topic.

// Test code: a failed unwrap is a failed test with a clear message. clippy's
// allow-unwrap-in-tests does not cover helper functions outside #[test] in an integration test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod chain_props;
mod golden;
mod support;
