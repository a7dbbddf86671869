//! Roles and actors: who is acting, on behalf of which practice.

use crate::ids::{TenantId, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A user's role within one practice. The same names drive Postgres RLS (`app.role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Therapist,
    Receptionist,
    Patient,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Therapist, Role::Receptionist, Role::Patient];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Therapist => "therapist",
            Role::Receptionist => "receptionist",
            Role::Patient => "patient",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected one of admin, therapist, receptionist, patient")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.as_str() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Who performed an action. Recorded in the audit trail and used to set the database context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user acting within a practice.
    User { tenant: TenantId, user: UserId, role: Role },
    /// A service calling with an API key (the key's id, never the key).
    ApiKey { tenant: TenantId, key_id: String },
    /// Praxis itself: migrations, scheduled jobs, operator CLI commands.
    System { component: String },
    /// A verified inbound webhook from a provider.
    Webhook { provider: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_their_own_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }
}
