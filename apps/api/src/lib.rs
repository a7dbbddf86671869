//! The Praxis HTTP API and the `praxis` command line.
//!
//! This crate is the only place that wires adapters to ports: it reads the configuration, builds
//! the pools and adapters, and hands them to the handlers.

pub mod audit_sealer;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod health;
pub mod json_body;
pub mod keys;
pub mod kms;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod openapi_document;
pub mod operator;
pub mod query_params;
pub mod reencrypt;
pub mod reminders;
pub mod routes;
pub mod server;
pub mod state;

pub use config::Config;
pub use error::ApiError;
pub use state::AppState;
