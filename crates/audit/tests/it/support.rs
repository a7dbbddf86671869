//! Shared builders and proptest strategies.

use audit::{Action, AuditEvent, ChainHead, ChainedEntry, Outcome, next_entry};
use kernel::{Actor, RequestId, Role, TenantId, UserId};
use proptest::prelude::*;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Chains `events` from genesis.
pub fn chain(events: Vec<AuditEvent>) -> Vec<ChainedEntry> {
    rechain(ChainHead::GENESIS, events)
}

/// Chains `events` after `head`.
pub fn rechain(mut head: ChainHead, events: Vec<AuditEvent>) -> Vec<ChainedEntry> {
    events
        .into_iter()
        .map(|event| {
            let entry = next_entry(&head, event).unwrap();
            head = entry.head();
            entry
        })
        .collect()
}

pub fn tenant(n: u128) -> TenantId {
    TenantId::from_uuid(Uuid::from_u128(n))
}

fn actor(tenant: TenantId) -> impl Strategy<Value = Actor> {
    prop_oneof![
        (any::<u128>(), 0..Role::ALL.len()).prop_map(move |(user, role)| Actor::User {
            tenant,
            user: UserId::from_uuid(Uuid::from_u128(user)),
            role: Role::ALL[role],
        }),
        "[a-z0-9]{1,12}".prop_map(move |key_id| Actor::ApiKey { tenant, key_id }),
        "[a-z-]{1,12}".prop_map(|component| Actor::System { component }),
        "[a-z]{1,10}".prop_map(|provider| Actor::Webhook { provider }),
    ]
}

fn detail_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[a-z0-9 _\"\\\\/\u{e9}\n]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| prop::collection::vec(inner, 0..3).prop_map(Value::Array))
}

fn detail() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec!["reason", "count", "status", "purpose", "fields", "provider", "version"]);
    prop::collection::btree_map(keys, detail_value(), 0..4)
        .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>()))
}

/// Any valid event of `tenant`.
pub fn event(tenant: TenantId) -> impl Strategy<Value = AuditEvent> {
    (
        actor(tenant),
        0..Action::ALL.len(),
        prop::sample::select(vec!["patient", "consent", "appointment", "user", "api_key", "session"]),
        prop::option::of("[A-Za-z0-9._:-]{1,40}"),
        0..Outcome::ALL.len(),
        prop::option::of("[A-Za-z0-9._-]{1,64}"),
        // Any instant from 1970 to the end of 9999, with nanoseconds (truncated when chained).
        0..253_402_300_799_999_999_999i128,
        detail(),
    )
        .prop_map(move |(actor, action, resource_type, resource_id, outcome, request_id, nanos, detail)| {
            AuditEvent {
                tenant,
                actor,
                action: Action::ALL[action],
                resource_type: resource_type.to_owned(),
                resource_id,
                outcome: Outcome::ALL[outcome],
                request_id: request_id.map(|id| RequestId::parse_inbound(&id).unwrap()),
                occurred_at: OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap(),
                detail,
            }
        })
}

/// A valid chain of 1..=max_len entries of one tenant.
pub fn chain_of(max_len: usize) -> impl Strategy<Value = (TenantId, Vec<ChainedEntry>)> {
    any::<u128>().prop_flat_map(move |n| {
        let tenant = tenant(n);
        prop::collection::vec(event(tenant), 1..=max_len).prop_map(move |events| (tenant, chain(events)))
    })
}
