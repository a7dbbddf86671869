//! Who a request comes from, once verified: a live session or a live API key, and the
//! revocations that would end it. Shared by the authentication use case (`crate::sessions`) and
//! the principal cache (`crate::principal_cache`).

use cache_redis::Revoked;
use identity::ApiScope;
use kernel::{Role, TenantId, UserId};

/// A live session, found by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub session: uuid::Uuid,
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
}

/// A live API key, found by its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyIdentity {
    pub tenant: TenantId,
    /// The key's public id, recorded as the actor of what it does.
    pub key_id: String,
    /// Its scopes that this version knows; an unknown stored scope grants nothing.
    pub scopes: Vec<ApiScope>,
}

/// A principal as verified against the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedPrincipal {
    Session(SessionIdentity),
    ApiKey(ApiKeyIdentity),
}

impl VerifiedPrincipal {
    /// The revocations that end this principal: the markers a request checks before trusting it.
    pub fn revoked_by(&self) -> Vec<Revoked> {
        match self {
            VerifiedPrincipal::Session(session) => {
                vec![Revoked::Session(session.session), Revoked::User { tenant: session.tenant, user: session.user }]
            }
            VerifiedPrincipal::ApiKey(key) => {
                vec![Revoked::ApiKey { tenant: key.tenant, key_id: key.key_id.clone() }]
            }
        }
    }
}
