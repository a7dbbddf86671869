//! End-to-end tests of the AWS KMS adapter against a KMS-compatible server: moto in server mode
//! (`cargo xtask` starts it, see xtask/src/moto.rs), or real AWS KMS.
//!
//! The endpoint comes from `PRAXIS_TEST_AWS_KMS_ENDPOINT`; without it every test fails with a
//! message saying how to start moto. They never skip silently: a green run means KMS was used.
//! Each test creates its own KMS key, so tests are independent and may run in parallel.

// Test code: a failed unwrap is a failed test with a clear message. clippy's
// allow-unwrap-in-tests does not cover helper functions outside #[test] in an integration test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod errors;
mod round_trip;
