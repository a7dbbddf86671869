//! The crate's error type. No HTTP here: apps/api maps each variant to a status and a problem+json
//! body. Messages never carry a password, a token or a hash.

use crate::password::PasswordProblem;
use thiserror::Error;

// The refusals of `csrf` and `token` are defined here, next to the error that wraps them, so
// those modules depend on this one and not the other way round (no module cycle).

/// Why a state-changing cookie-authenticated request was refused (the API answers 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CsrfProblem {
    #[error("csrf cookie missing")]
    MissingCookieToken,
    #[error("csrf header missing")]
    MissingHeaderToken,
    #[error("csrf token malformed")]
    MalformedToken,
    #[error("csrf header does not match cookie")]
    TokenMismatch,
    #[error("request origin not allowed")]
    OriginNotAllowed,
}

/// Why a presented token was refused. Deliberately coarse: the API answers 401 for all of them,
/// and the messages never contain the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("wrong token prefix")]
    WrongPrefix,
    #[error("wrong token length")]
    WrongLength,
    #[error("token is not canonical base64url")]
    NotBase64Url,
    #[error("token names no tenant")]
    NilTenant,
}

/// Everything that can go wrong in identity rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// A new password breaks the password policy (the API answers 422 with the reason).
    #[error("password rejected: {0}")]
    PasswordRejected(#[from] PasswordProblem),
    /// The configured Argon2 parameters are out of range.
    #[error("invalid argon2 parameters: {0}")]
    InvalidArgon2Params(String),
    /// A stored password hash is not a PHC string we can verify (corrupt row, foreign algorithm,
    /// or cost parameters beyond the bound that keeps one verification cheap enough).
    #[error("stored password hash is malformed or unsupported")]
    InvalidPasswordHash,
    /// Argon2 itself failed (out of memory, internal error). The text is argon2's, never input.
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The system random source failed. Nothing secret can be generated; fail closed.
    #[error("system random source failed")]
    Random,
    /// A session token, API key or CSRF token is not well formed.
    #[error("malformed token: {0}")]
    MalformedToken(#[from] TokenError),
    /// A CSRF check failed.
    #[error("csrf check failed: {0}")]
    Csrf(#[from] CsrfProblem),
    /// An API key scope name is not one we know (the text is the offending name, not a secret).
    #[error("unknown api key scope {0:?}")]
    UnknownApiScope(String),
    /// A permission name is not one we know.
    #[error("unknown permission {0:?}")]
    UnknownPermission(String),
    /// A trusted-proxy CIDR in the configuration is malformed.
    #[error("invalid CIDR {0:?}: expected an address with a prefix length and no host bits set, e.g. 10.0.0.0/8")]
    InvalidCidr(String),
}
