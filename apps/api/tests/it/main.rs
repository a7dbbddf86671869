//! Integration tests of the `praxis` API: a real server on a loopback port, real Postgres and
//! Redis (provided by `cargo xtask test`), real HTTP.

// A failed unwrap in a test is a failed test with its message: exactly what a test should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod appointments;
mod audit_sealing;
mod audit_signing;
mod config_refusals;
mod contract;
mod edge;
mod faults;
mod identity;
mod keys;
mod kms_backends;
mod openapi;
mod operator_cli;
mod patients;
mod readiness;
mod revocation;
mod rls;
mod scale_out;
mod support;
mod webhooks;
