//! Integration tests of the `praxis` API: a real server on a loopback port, real Postgres and
//! Redis (provided by `cargo xtask test`), real HTTP.

mod config_refusals;
mod edge;
mod readiness;
mod rls;
mod support;
