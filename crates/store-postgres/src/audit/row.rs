//! Entries as rows and back. Every hashed field round-trips exactly (see the `audit` crate docs).

use super::AuditStoreError;
use ::audit::{Action, AuditEvent, ChainLink, ChainedEntry, Digest, Outcome, PendingEntry, RecordedEntry};
use kernel::{Actor, RequestId, Role, TenantId, UserId};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// The actor spread over its columns (`actor_kind` fixes which ones are set; a CHECK enforces it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActorColumns<'a> {
    pub kind: &'static str,
    pub tenant: Option<Uuid>,
    pub user: Option<Uuid>,
    pub role: Option<&'static str>,
    pub name: Option<&'a str>,
}

impl<'a> ActorColumns<'a> {
    pub fn of(actor: &'a Actor) -> Self {
        let none = Self { kind: "", tenant: None, user: None, role: None, name: None };
        match actor {
            Actor::User { tenant, user, role } => Self {
                kind: "user",
                tenant: Some(*tenant.as_uuid()),
                user: Some(*user.as_uuid()),
                role: Some(role.as_str()),
                ..none
            },
            Actor::ApiKey { tenant, key_id } => {
                Self { kind: "api_key", tenant: Some(*tenant.as_uuid()), name: Some(key_id), ..none }
            }
            Actor::System { component } => Self { kind: "system", name: Some(component), ..none },
            Actor::Webhook { provider } => Self { kind: "webhook", name: Some(provider), ..none },
        }
    }
}

/// One `audit_entries` row, columns in `entry_columns!()` order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct EntryRow {
    pub tenant_id: Uuid,
    pub id: i64,
    /// `seq`, `prev_hash` and `hash` are set together when the entry is sealed (a CHECK).
    pub seq: Option<i64>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
    /// Written when the entry is recorded; `NULL` only on entries sealed before digests existed.
    pub digest: Option<Vec<u8>>,
    pub actor_kind: String,
    pub actor_tenant: Option<Uuid>,
    pub actor_user: Option<Uuid>,
    pub actor_role: Option<String>,
    pub actor_name: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub outcome: String,
    pub request_id: Option<String>,
    pub occurred_at: OffsetDateTime,
    pub detail: Value,
}

impl EntryRow {
    /// The stored entry, sealed or not, or why the row is not one.
    pub fn into_recorded(self) -> Result<RecordedEntry, AuditStoreError> {
        let tenant = TenantId::from_uuid(self.tenant_id);
        let seq = self.seq.unwrap_or(0);
        let corrupt = |reason| AuditStoreError::CorruptRow { tenant, seq, reason };
        let id = u64::try_from(self.id).map_err(|_| corrupt("negative id"))?;
        let link = match (self.seq, self.prev_hash.as_deref(), self.hash.as_deref()) {
            (Some(seq), Some(prev_hash), Some(hash)) => Some(ChainLink {
                seq: u64::try_from(seq).map_err(|_| corrupt("negative seq"))?,
                prev_hash: digest(prev_hash).ok_or_else(|| corrupt("prev_hash is not 32 bytes"))?,
                hash: digest(hash).ok_or_else(|| corrupt("hash is not 32 bytes"))?,
            }),
            (None, None, None) => None,
            _ => return Err(corrupt("partly sealed")),
        };
        let event = self.decode_event().map_err(corrupt)?;
        Ok(RecordedEntry { id, link, event })
    }

    /// An unsealed entry for the sealer or the verifier, or its id when the row does not decode
    /// (a column edited to a value the application never writes: treated as altered).
    pub fn into_pending(self) -> Result<PendingEntry, u64> {
        let id = u64::try_from(self.id).unwrap_or(0);
        let stored_digest = self.digest.as_deref().and_then(digest);
        match self.decode_event() {
            Ok(event) => Ok(PendingEntry { id, digest: stored_digest, event }),
            Err(_) => Err(id),
        }
    }

    /// For verification of a sealed row: the stored entry, or, when the row does not decode (a
    /// column edited to a value the application never writes), a stand-in with the row's tenant,
    /// seq and hashes whose content cannot hash to the stored hash. The pure verifier then
    /// reports the row exactly as it reports any other edited entry (after its own
    /// seq/tenant/link checks), instead of the adapter inventing a second way to report
    /// tampering.
    pub fn into_entry_for_verification(self) -> ChainedEntry {
        let fallback_seq = self.seq.and_then(|seq| u64::try_from(seq).ok()).unwrap_or(0);
        let fallback_prev = self.prev_hash.as_deref().and_then(digest).unwrap_or([0; 32]);
        let fallback_hash = self.hash.as_deref().and_then(digest).unwrap_or([0; 32]);
        let tenant = TenantId::from_uuid(self.tenant_id);
        let occurred_at = self.occurred_at;
        match self.into_recorded() {
            Ok(RecordedEntry { link: Some(link), event, .. }) => {
                ChainedEntry { seq: link.seq, prev_hash: link.prev_hash, hash: link.hash, event }
            }
            _ => ChainedEntry {
                seq: fallback_seq,
                prev_hash: fallback_prev,
                hash: fallback_hash,
                event: AuditEvent {
                    tenant,
                    actor: Actor::System { component: "undecodable-row".to_owned() },
                    action: Action::AuditVerified,
                    resource_type: "undecodable_row".to_owned(),
                    resource_id: None,
                    outcome: Outcome::Failure,
                    request_id: None,
                    occurred_at,
                    detail: Value::Object(serde_json::Map::new()),
                },
            },
        }
    }

    fn decode_event(self) -> Result<AuditEvent, &'static str> {
        let tenant = TenantId::from_uuid(self.tenant_id);
        let actor = match self.actor_kind.as_str() {
            "user" => Actor::User {
                tenant: TenantId::from_uuid(self.actor_tenant.ok_or("user actor without tenant")?),
                user: UserId::from_uuid(self.actor_user.ok_or("user actor without user id")?),
                role: self
                    .actor_role
                    .as_deref()
                    .ok_or("user actor without role")?
                    .parse::<Role>()
                    .map_err(|_| "unknown role")?,
            },
            "api_key" => Actor::ApiKey {
                tenant: TenantId::from_uuid(self.actor_tenant.ok_or("api key actor without tenant")?),
                key_id: self.actor_name.ok_or("api key actor without key id")?,
            },
            "system" => Actor::System { component: self.actor_name.ok_or("system actor without component")? },
            "webhook" => Actor::Webhook { provider: self.actor_name.ok_or("webhook actor without provider")? },
            _ => return Err("unknown actor kind"),
        };
        let request_id = match self.request_id.as_deref() {
            None => None,
            Some(raw) => Some(RequestId::parse_inbound(raw).ok_or("malformed request id")?),
        };
        Ok(AuditEvent {
            tenant,
            actor,
            action: self.action.parse().map_err(|_| "unknown action")?,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            outcome: self.outcome.parse().map_err(|_| "unknown outcome")?,
            request_id,
            occurred_at: self.occurred_at,
            detail: self.detail,
        })
    }
}

pub(crate) fn digest(bytes: &[u8]) -> Option<Digest> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::FixedClock;
    use time::macros::datetime;

    fn row_of(entry: &ChainedEntry) -> EntryRow {
        let actor = ActorColumns::of(&entry.event.actor);
        EntryRow {
            tenant_id: *entry.event.tenant.as_uuid(),
            id: 40 + entry.seq as i64,
            seq: Some(entry.seq as i64),
            prev_hash: Some(entry.prev_hash.to_vec()),
            hash: Some(entry.hash.to_vec()),
            digest: Some(::audit::content_digest(&entry.event).to_vec()),
            actor_kind: actor.kind.to_owned(),
            actor_tenant: actor.tenant,
            actor_user: actor.user,
            actor_role: actor.role.map(str::to_owned),
            actor_name: actor.name.map(str::to_owned),
            action: entry.event.action.as_str().to_owned(),
            resource_type: entry.event.resource_type.clone(),
            resource_id: entry.event.resource_id.clone(),
            outcome: entry.event.outcome.as_str().to_owned(),
            request_id: entry.event.request_id.as_ref().map(|r| r.as_str().to_owned()),
            occurred_at: entry.event.occurred_at,
            detail: entry.event.detail.clone(),
        }
    }

    #[test]
    fn every_actor_kind_round_trips_through_columns() {
        let tenant = TenantId::new();
        let clock = FixedClock::at(datetime!(2026-03-01 12:00:00.5 UTC));
        let actors = [
            Actor::User { tenant, user: UserId::new(), role: Role::Receptionist },
            Actor::ApiKey { tenant, key_id: "key-1".into() },
            Actor::System { component: "scheduler".into() },
            Actor::Webhook { provider: "stripe".into() },
        ];
        for actor in actors {
            let event = AuditEvent::new(tenant, actor, Action::PatientRead, "patient", &clock)
                .with_resource_id("p-1")
                .with_request_id(RequestId::generate())
                .with_detail(serde_json::json!({ "n": 1 }));
            let entry = ::audit::next_entry(&::audit::ChainHead::GENESIS, event).unwrap();
            let back = row_of(&entry).into_recorded().unwrap();
            assert_eq!(back, RecordedEntry::sealed(40 + entry.seq, entry.clone()));
            assert_eq!(row_of(&entry).into_entry_for_verification().compute_hash(), entry.hash);
            assert!(row_of(&entry).into_pending().unwrap().is_unaltered());
        }
    }

    #[test]
    fn an_undecodable_row_becomes_an_entry_that_cannot_verify() {
        let tenant = TenantId::new();
        let clock = FixedClock::at(datetime!(2026-03-01 12:00 UTC));
        let event =
            AuditEvent::new(tenant, Actor::System { component: "x".into() }, Action::AuthLogin, "session", &clock);
        let entry = ::audit::next_entry(&::audit::ChainHead::GENESIS, event).unwrap();
        let mut row = row_of(&entry);
        row.action = "patient.delete".into();
        assert!(matches!(row.clone().into_recorded(), Err(AuditStoreError::CorruptRow { seq: 1, .. })));
        assert_eq!(row.clone().into_pending(), Err(41));
        let stand_in = row.into_entry_for_verification();
        assert_eq!((stand_in.seq, stand_in.prev_hash, stand_in.hash), (1, entry.prev_hash, entry.hash));
        assert_ne!(stand_in.compute_hash(), stand_in.hash);
    }
}
