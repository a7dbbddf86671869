//! Golden test: a fixed entry has a fixed encoding and hash. If this fails, the canonical format
//! changed and every stored chain would stop verifying: bump the encoding tag instead.

use audit::{Action, AuditEvent, ChainHead, Outcome, canonical_encoding, next_entry};
use kernel::{Actor, RequestId, Role, TenantId, UserId};
use serde_json::json;
use time::macros::datetime;
use uuid::Uuid;

fn tenant() -> TenantId {
    TenantId::from_uuid(Uuid::from_u128(0x0190_f0a4_1b2c_7d3e_8f40_1234_5678_9abc))
}

fn event() -> AuditEvent {
    AuditEvent {
        tenant: tenant(),
        actor: Actor::User {
            tenant: tenant(),
            user: UserId::from_uuid(Uuid::from_u128(0x0190_f0a4_1b2c_7d3e_8f40_0000_0000_0001)),
            role: Role::Therapist,
        },
        action: Action::PatientRead,
        resource_type: "patient".into(),
        resource_id: Some("0190f0a4-1b2c-7d3e-8f40-00000000beef".into()),
        outcome: Outcome::Success,
        request_id: Some(RequestId::parse_inbound("req-42").unwrap()),
        occurred_at: datetime!(2026-03-01 13:04:05.123456789 +01:00),
        detail: json!({ "purpose": "treatment", "fields": ["diagnosis_code", 3], "a\"é": null }),
    }
}

/// The encoding built by hand from the spec in the crate docs, independently of the code.
fn spec_encoding(seq: u64, event: &AuditEvent) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let Actor::User { tenant, user, role } = &event.actor else { unreachable!() };
    let mut out = Vec::new();
    field(&mut out, b"praxis.audit.entry.v1");
    field(&mut out, &seq.to_be_bytes());
    field(&mut out, event.tenant.as_uuid().as_bytes());
    field(&mut out, b"user");
    field(&mut out, tenant.as_uuid().as_bytes());
    field(&mut out, user.as_uuid().as_bytes());
    field(&mut out, role.as_str().as_bytes());
    field(&mut out, b"patient.read");
    field(&mut out, b"patient");
    field(&mut out, b"\x010190f0a4-1b2c-7d3e-8f40-00000000beef");
    field(&mut out, b"success");
    field(&mut out, b"\x01req-42");
    field(&mut out, b"2026-03-01T12:04:05.123456Z");
    field(&mut out, "{\"a\\\"é\":null,\"fields\":[\"diagnosis_code\",3],\"purpose\":\"treatment\"}".as_bytes());
    out
}

#[test]
fn encoding_matches_the_written_spec() {
    let entry = next_entry(&ChainHead::GENESIS, event()).unwrap();
    assert_eq!(canonical_encoding(1, &entry.event), spec_encoding(1, &event()));
    // Before normalisation too: the encoding itself truncates to microseconds in UTC.
    assert_eq!(canonical_encoding(1, &event()), spec_encoding(1, &event()));
}

/// These values were also reproduced by an independent Python implementation of the spec
/// (hashlib + struct), so the spec in the crate docs is sufficient to verify a chain elsewhere.
#[test]
fn golden_hashes() {
    let first = next_entry(&ChainHead::GENESIS, event()).unwrap();
    let mut second_event = event();
    second_event.resource_id = None;
    second_event.request_id = None;
    second_event.actor = Actor::System { component: "scheduler".into() };
    second_event.action = Action::ConsentExpired;
    second_event.resource_type = "consent".into();
    second_event.outcome = Outcome::Success;
    second_event.detail = json!({});
    let second = next_entry(&first.head(), second_event).unwrap();

    assert_eq!(hex::encode(first.hash), "2dfc7eaaded54a83bb06e77b0431f6c8495d02d4912c2cc0565c93e58ad8de48");
    assert_eq!(hex::encode(second.hash), "9e89358d4a9e08628b43333ca272d69462970e1cb9f9ef7de2ccacf3d64730a8");
}
