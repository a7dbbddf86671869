//! Typed identifiers. A `PatientId` cannot be passed where a `TenantId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id: keeps btree indexes append-mostly.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

uuid_id!(
    /// A practice: the unit of isolation. Every tenant-scoped row carries one.
    TenantId
);
uuid_id!(
    /// A user account (staff member or patient login).
    UserId
);
uuid_id!(
    /// A patient record.
    PatientId
);

/// The id of one HTTP request, echoed in `X-Request-Id` and in every problem+json body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// Longest inbound id we echo; longer ones are replaced by a generated id.
    pub const MAX_LEN: usize = 64;

    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// Accepts an inbound id only when it is 1..=64 characters of `[A-Za-z0-9._-]`, so a client
    /// cannot inject log lines, header splits or markup through it.
    pub fn parse_inbound(raw: &str) -> Option<Self> {
        let well_formed = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        well_formed.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings() {
        let id = TenantId::new();
        assert_eq!(id.to_string().parse::<TenantId>().unwrap(), id);
    }

    #[test]
    fn inbound_request_ids_are_checked() {
        assert!(RequestId::parse_inbound("abc-123_X.y").is_some());
        assert!(RequestId::parse_inbound("").is_none());
        assert!(RequestId::parse_inbound("a b").is_none());
        assert!(RequestId::parse_inbound("line\nbreak").is_none());
        assert!(RequestId::parse_inbound(&"a".repeat(65)).is_none());
        assert!(RequestId::parse_inbound(&"a".repeat(64)).is_some());
    }
}
