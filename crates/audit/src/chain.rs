//! The per-tenant hash chain: canonical encoding, entry hashes, and [`next_entry`].
//!
//! See the crate documentation for the byte-level specification of the encoding.

use crate::error::AuditError;
use crate::event::AuditEvent;
use kernel::Actor;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::{OffsetDateTime, UtcOffset};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The `prev_hash` of a tenant's first entry.
pub const GENESIS_HASH: Digest = [0; 32];

/// First field of every entry encoding. A new encoding gets a new tag, so an old entry can
/// never be read as a new one.
pub const ENTRY_ENCODING_TAG: &str = "praxis.audit.entry.v1";

/// Largest sequence number: Postgres `BIGINT` is signed, so adapters can store `seq as i64`.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// The tip of a tenant's chain: what the next entry links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence number of the last entry; 0 for an empty chain.
    pub seq: u64,
    /// Hash of the last entry; [`GENESIS_HASH`] for an empty chain.
    #[serde(with = "hex_digest")]
    pub hash: Digest,
}

impl ChainHead {
    /// The head of an empty chain.
    pub const GENESIS: ChainHead = ChainHead { seq: 0, hash: GENESIS_HASH };
}

impl Default for ChainHead {
    fn default() -> Self {
        Self::GENESIS
    }
}

/// An event as stored: its place in the chain and the hashes that bind it there.
///
/// Fields are public so adapters can rebuild stored rows for [`crate::ChainVerifier`], which
/// deliberately does not trust `hash` or `prev_hash` but recomputes and cross-checks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedEntry {
    /// Position in the tenant's chain, from 1, without gaps.
    pub seq: u64,
    /// `hash` of the entry at `seq - 1` ([`GENESIS_HASH`] for `seq == 1`).
    #[serde(with = "hex_digest")]
    pub prev_hash: Digest,
    /// `SHA-256(prev_hash || canonical_encoding(seq, event))`.
    #[serde(with = "hex_digest")]
    pub hash: Digest,
    pub event: AuditEvent,
}

impl ChainedEntry {
    /// This entry as a chain head (what the next entry links to).
    pub fn head(&self) -> ChainHead {
        ChainHead { seq: self.seq, hash: self.hash }
    }

    /// The hash this entry *should* have, recomputed from its content and `prev_hash`.
    pub fn compute_hash(&self) -> Digest {
        entry_hash(&self.prev_hash, self.seq, &self.event)
    }

    /// The canonical encoding of this entry (see the crate docs).
    pub fn canonical_encoding(&self) -> Vec<u8> {
        canonical_encoding(self.seq, &self.event)
    }
}

/// The core of appending: the entry that follows `head`.
///
/// Validates the event (tenant, tokens, PII-free bounded detail), normalises its time to UTC
/// microseconds, assigns `head.seq + 1` and links it to `head.hash`. Pure: the adapter reads the
/// head under a per-tenant lock (e.g. `SELECT ... FOR UPDATE` on a heads row) inside its
/// transaction, calls this, inserts the entry and moves the head, then commits. Two concurrent
/// appends without that lock would both link to the same head and fork the chain, which
/// verification then reports as a break.
pub fn next_entry(head: &ChainHead, event: AuditEvent) -> Result<ChainedEntry, AuditError> {
    let event = event.normalized()?;
    event.validate()?;
    let seq = head.seq.checked_add(1).filter(|seq| *seq <= MAX_SEQ).ok_or(AuditError::SequenceOverflow)?;
    let hash = entry_hash(&head.hash, seq, &event);
    Ok(ChainedEntry { seq, prev_hash: head.hash, hash, event })
}

/// `SHA-256(prev_hash || canonical_encoding(seq, event))`.
pub fn entry_hash(prev_hash: &Digest, seq: u64, event: &AuditEvent) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical_encoding(seq, event));
    hasher.finalize().into()
}

/// The canonical, unambiguous byte encoding of an entry (see the crate docs for the table).
///
/// Every field is written as an 8-byte big-endian length followed by that many bytes, in a
/// fixed order; an optional field is `0x00` (absent) or `0x01` followed by its value, inside
/// the length. No field boundary can therefore be moved without changing the bytes.
pub fn canonical_encoding(seq: u64, event: &AuditEvent) -> Vec<u8> {
    let mut enc = Encoder(Vec::with_capacity(256));
    enc.field(ENTRY_ENCODING_TAG.as_bytes());
    enc.field(&seq.to_be_bytes());
    encode_event(&mut enc, event);
    enc.0
}

/// First field of the content digest's encoding (see [`content_digest`]).
pub const CONTENT_ENCODING_TAG: &str = "praxis.audit.content.v1";

/// `SHA-256` of an entry's content alone: the canonical encoding of the event under
/// [`CONTENT_ENCODING_TAG`], without a seq (an entry has none until it is sealed).
///
/// Written with the entry when a request records it, before the sealer links it into the chain:
/// verification recomputes it for entries not sealed yet, so an edit of an unsealed entry that
/// does not also recompute the digest is found, and the sealer refuses to seal an entry whose
/// content no longer matches it (it would launder the edit into the chain).
pub fn content_digest(event: &AuditEvent) -> Digest {
    let mut enc = Encoder(Vec::with_capacity(256));
    enc.field(CONTENT_ENCODING_TAG.as_bytes());
    encode_event(&mut enc, event);
    Sha256::digest(&enc.0).into()
}

/// The event's fields, in the order of the crate docs' table (shared by both encodings).
fn encode_event(enc: &mut Encoder, event: &AuditEvent) {
    enc.field(event.tenant.as_uuid().as_bytes());
    match &event.actor {
        Actor::User { tenant, user, role } => {
            enc.field(b"user");
            enc.field(tenant.as_uuid().as_bytes());
            enc.field(user.as_uuid().as_bytes());
            enc.field(role.as_str().as_bytes());
        }
        Actor::ApiKey { tenant, key_id } => {
            enc.field(b"api_key");
            enc.field(tenant.as_uuid().as_bytes());
            enc.field(key_id.as_bytes());
        }
        Actor::System { component } => {
            enc.field(b"system");
            enc.field(component.as_bytes());
        }
        Actor::Webhook { provider } => {
            enc.field(b"webhook");
            enc.field(provider.as_bytes());
        }
    }
    enc.field(event.action.as_str().as_bytes());
    enc.field(event.resource_type.as_bytes());
    enc.optional(event.resource_id.as_deref().map(str::as_bytes));
    enc.field(event.outcome.as_str().as_bytes());
    enc.optional(event.request_id.as_ref().map(|id| id.as_str().as_bytes()));
    enc.field(canonical_timestamp(event.occurred_at).as_bytes());
    enc.field(crate::detail::canonical_json(&event.detail).as_bytes());
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC: always 27 ASCII bytes for years 1..=9999, microseconds
/// always written, sub-microsecond digits dropped.
///
/// Validated events are always in that range. A time whose UTC form is not representable at
/// all (only possible for a hand-built, unvalidated event) is written in its own offset rather
/// than panicking; still deterministic.
pub fn canonical_timestamp(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub(crate) struct Encoder(pub(crate) Vec<u8>);

impl Encoder {
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn optional(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.field(&[0x00]),
            Some(bytes) => {
                self.0.extend_from_slice(&(bytes.len() as u64 + 1).to_be_bytes());
                self.0.push(0x01);
                self.0.extend_from_slice(bytes);
            }
        }
    }
}

/// Digests as lower-case hex in JSON.
mod hex_digest {
    use super::Digest;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(digest: &Digest, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(digest))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&text, &mut digest).map_err(D::Error::custom)?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Outcome};
    use kernel::{FixedClock, RequestId, Role, TenantId, UserId};
    use serde_json::json;
    use time::macros::datetime;

    fn event() -> AuditEvent {
        let tenant = TenantId::new();
        let clock = FixedClock::at(datetime!(2026-03-01 12:00:00.5 UTC));
        AuditEvent::new(
            tenant,
            Actor::User { tenant, user: UserId::new(), role: Role::Admin },
            Action::UserCreate,
            "user",
            &clock,
        )
    }

    #[test]
    fn first_entry_links_to_genesis_and_the_next_to_it() {
        let first = next_entry(&ChainHead::GENESIS, event()).unwrap();
        assert_eq!((first.seq, first.prev_hash), (1, GENESIS_HASH));
        assert_eq!(first.hash, first.compute_hash());
        let second = next_entry(&first.head(), event()).unwrap();
        assert_eq!((second.seq, second.prev_hash), (2, first.hash));
    }

    #[test]
    fn invalid_events_are_not_chained() {
        let bad = event().with_detail(json!({ "email": "x" }));
        assert!(matches!(next_entry(&ChainHead::GENESIS, bad), Err(AuditError::DetailPiiKey { .. })));
    }

    #[test]
    fn sequence_stops_at_bigint_max() {
        let head = ChainHead { seq: MAX_SEQ, hash: GENESIS_HASH };
        assert!(matches!(next_entry(&head, event()), Err(AuditError::SequenceOverflow)));
        let head = ChainHead { seq: MAX_SEQ - 1, hash: GENESIS_HASH };
        assert_eq!(next_entry(&head, event()).unwrap().seq, MAX_SEQ);
    }

    #[test]
    fn timestamp_has_fixed_microsecond_precision() {
        assert_eq!(canonical_timestamp(datetime!(2026-03-01 12:00 UTC)), "2026-03-01T12:00:00.000000Z");
        assert_eq!(canonical_timestamp(datetime!(0001-01-02 00:00:00.999999999 +02:00)), "0001-01-01T22:00:00.999999Z");
    }

    #[test]
    fn absent_and_empty_optionals_encode_differently() {
        let mut a = event();
        a.resource_id = None;
        let mut b = a.clone();
        b.resource_id = Some(String::new());
        assert_ne!(canonical_encoding(1, &a), canonical_encoding(1, &b));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        let mut a = event();
        a.resource_type = "ab".into();
        a.resource_id = Some("c".into());
        let mut b = a.clone();
        b.resource_type = "a".into();
        b.resource_id = Some("bc".into());
        assert_ne!(canonical_encoding(1, &a), canonical_encoding(1, &b));
    }

    #[test]
    fn only_the_hashed_fields_matter_and_all_of_them_do() {
        let base = event()
            .with_resource_id("r1")
            .with_request_id(RequestId::parse_inbound("req-1").unwrap())
            .with_detail(json!({ "reason": "x" }));
        let reference = canonical_encoding(7, &base);
        let mut variants = Vec::new();
        let mut e = base.clone();
        e.tenant = TenantId::new();
        variants.push(e);
        let mut e = base.clone();
        e.actor = Actor::System { component: "x".into() };
        variants.push(e);
        let mut e = base.clone();
        e.action = Action::UserDisable;
        variants.push(e);
        let mut e = base.clone();
        e.resource_type = "users".into();
        variants.push(e);
        let mut e = base.clone();
        e.resource_id = None;
        variants.push(e);
        let mut e = base.clone();
        e.outcome = Outcome::Failure;
        variants.push(e);
        let mut e = base.clone();
        e.request_id = None;
        variants.push(e);
        let mut e = base.clone();
        e.occurred_at += time::Duration::microseconds(1);
        variants.push(e);
        let mut e = base.clone();
        e.detail = json!({ "reason": "y" });
        variants.push(e);
        for variant in &variants {
            assert_ne!(canonical_encoding(7, variant), reference, "{variant:?}");
        }
        assert_ne!(canonical_encoding(8, &base), reference);
        // Same instant in another offset: same encoding.
        let mut e = base.clone();
        e.occurred_at = e.occurred_at.to_offset(time::UtcOffset::from_hms(5, 30, 0).unwrap());
        assert_eq!(canonical_encoding(7, &e), reference);
    }

    #[test]
    fn entries_serialise_hashes_as_hex() {
        let entry = next_entry(&ChainHead::GENESIS, event()).unwrap();
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["prev_hash"], "0".repeat(64));
        let back: ChainedEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, entry);
    }
}
