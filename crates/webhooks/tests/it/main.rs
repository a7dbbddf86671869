//! Integration tests of the webhooks crate's public API: one test binary, one module per
//! provider, each signing its requests at run time with a freshly generated secret.

// Test code: a failed unwrap is a failed test with a clear message. clippy's
// allow-unwrap-in-tests does not cover helper functions outside #[test] in an integration test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod standard;
mod stripe;
mod support;
mod tamper;
mod twilio;
mod vapi;
mod whatsapp;
