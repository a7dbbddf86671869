//! Integration tests of store-postgres against a real Postgres (`PRAXIS_TEST_DATABASE_URL`, set
//! by `cargo xtask test`). Each test gets its own migrated database from testkit.

// Test code: a failed unwrap is a failed test with a clear message. clippy's
// allow-unwrap-in-tests does not cover helper functions outside #[test] in an integration test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_append;
mod audit_privileges;
mod audit_query;
mod audit_retention;
mod audit_sealing;
mod audit_tamper;
mod context;
mod errors;
mod kms_probe;
mod migrations;
mod support;
