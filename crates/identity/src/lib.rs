//! Identity: who may do what.
//!
//! The pure rules behind sign-in, sessions, API keys and authorization; the app wires them to
//! HTTP, Postgres and Redis.
//!
//! - [`permission`]: the permission matrix ([`allowed`]: role × permission → [`Scope`]) and API
//!   key scopes ([`ApiScope`], [`scope_grants`]). `PERMISSIONS.md` is generated from it.
//! - [`password`]: the policy for new passwords ([`PasswordPolicy`]) with a shipped deny-list;
//!   [`hashing`]: Argon2id hashing ([`PasswordHasher`]) including a dummy verification so
//!   unknown accounts take as long as wrong passwords.
//! - [`token`]: session tokens and API keys (`prx_s_…`, `prx_k_…`) that carry their tenant, so
//!   the RLS context can be set before the lookup; stored as SHA-256 hashes.
//! - [`session`]: idle and absolute timeouts. [`csrf`]: double-submit token + origin check.
//! - [`rate_limit`]: limit values and keys. [`client_ip`]: `X-Forwarded-For` behind trusted
//!   proxies.
//!
//! Pure: no I/O (the password deny-list is embedded at compile time), no clock reads (callers
//! pass `now` from a `kernel::Clock`), no framework types. Randomness comes from `ring`'s
//! `SecureRandom`, passed in where tokens are made.

pub mod account;
pub mod client_ip;
pub mod csrf;
mod error;
pub mod hashing;
pub mod password;
pub mod permission;
pub mod rate_limit;
pub mod session;
pub mod token;

pub use account::account_email;
pub use client_ip::{Cidr, client_ip};
pub use csrf::{CSRF_COOKIE_NAME, CSRF_HEADER_NAME, CsrfProblem, CsrfToken, check_csrf};
pub use error::IdentityError;
pub use hashing::{Argon2Params, PasswordHasher};
pub use password::{PasswordPolicy, PasswordProblem};
pub use permission::{ApiScope, Permission, Relation, Scope, allowed, api_key_allowed, matrix_markdown, scope_grants};
pub use rate_limit::{Limit, RateLimitClass, RateLimits, login_limit_key};
pub use session::{SessionPolicy, SessionState};
pub use token::{ApiKeyId, ApiKeyToken, SessionToken, TokenError, TokenHash, constant_time_eq};
