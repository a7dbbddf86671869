//! HTTP handlers, one module per resource family.

pub mod audit;
pub mod auth;
pub mod users;
