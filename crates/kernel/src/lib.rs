//! The shared vocabulary of Praxis.
//!
//! Pure: no I/O, no framework types. Every other crate may depend on this one.

pub mod clock;
pub mod ids;
pub mod role;
pub mod secret;

pub use clock::{Clock, FixedClock, SharedClock, SystemClock};
pub use ids::{PatientId, RequestId, TenantId, UserId};
pub use role::{Actor, Role, UnknownRole};
pub use secret::{Pii, Secret};
