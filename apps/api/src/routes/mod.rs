//! HTTP handlers, one module per resource family.

pub mod appointments;
pub mod audit;
pub mod auth;
pub mod calendar;
pub mod consents;
pub mod patients;
pub mod users;
pub mod webhooks;
