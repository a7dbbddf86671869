//! The two stages of an entry's life: *recorded* by the request whose change it records, then
//! *sealed* into its practice's hash chain by the sealer.
//!
//! Recording takes no practice-wide lock: a request inserts its entry (with its
//! [`content_digest`]) in its own transaction, so the entry is durable exactly when the change
//! is, and two requests of one practice never wait for each other. Sealing links committed,
//! not-yet-sealed entries into the chain in batches, in the order they were recorded, behind the
//! practice's chain-head lock, which only sealers take ([`seal`] is the pure core of one batch).
//! Transparency logs (Certificate Transparency, Trillian) sequence their entries the same way:
//! accept now, integrate into the tree within a bounded delay.
//!
//! Until an entry is sealed, what protects it is the first line of defence (the runtime role can
//! set its seal once and change nothing else; a trigger refuses every other change, for the
//! owner too) plus its digest, which verification recomputes. The chain protects it from the
//! moment it is sealed.

use crate::chain::{ChainHead, ChainedEntry, Digest, content_digest, next_entry};
use crate::error::AuditError;
use crate::event::AuditEvent;
use serde::{Deserialize, Serialize};

/// Where a sealed entry sits in its practice's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// `hash` of the entry at `seq - 1`.
    pub prev_hash: Digest,
    /// `SHA-256(prev_hash || canonical_encoding(seq, event))`.
    pub hash: Digest,
}

/// An entry as read back from the trail: sealed or not yet.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEntry {
    /// The entry's place in the order entries were recorded: ascending, never reused, never
    /// changed by sealing (so a listing by id is stable while entries get sealed). Ids have
    /// gaps: a rolled-back transaction uses one up too.
    pub id: u64,
    /// Where the sealer linked it; `None` until then.
    pub link: Option<ChainLink>,
    pub event: AuditEvent,
}

impl RecordedEntry {
    /// A sealed entry.
    pub fn sealed(id: u64, entry: ChainedEntry) -> Self {
        let link = ChainLink { seq: entry.seq, prev_hash: entry.prev_hash, hash: entry.hash };
        Self { id, link: Some(link), event: entry.event }
    }

    pub fn is_sealed(&self) -> bool {
        self.link.is_some()
    }
}

/// A recorded entry the sealer has not linked yet, with the digest written when it was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    pub id: u64,
    /// `None` only for a row edited outside the application (the schema requires a digest on
    /// every unsealed entry).
    pub digest: Option<Digest>,
    pub event: AuditEvent,
}

impl PendingEntry {
    /// Whether the content still is what was recorded: the stored digest matches the content.
    pub fn is_unaltered(&self) -> bool {
        self.digest == Some(content_digest(&self.event))
    }
}

/// An entry ready to be recorded: validated, normalised (UTC microseconds) and digested.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryToRecord {
    pub event: AuditEvent,
    pub digest: Digest,
}

/// The core of recording: validates and normalises `event` and computes its [`content_digest`].
/// The adapter inserts exactly these values, unsealed, in the caller's transaction.
pub fn to_record(event: AuditEvent) -> Result<EntryToRecord, AuditError> {
    let event = event.normalized()?;
    event.validate()?;
    let digest = content_digest(&event);
    Ok(EntryToRecord { event, digest })
}

/// What one sealing batch does.
#[derive(Debug, Clone, PartialEq)]
pub struct SealPlan {
    /// The entries to link, with their recorded ids, in chain order.
    pub sealed: Vec<(u64, ChainedEntry)>,
    /// Ids of entries left unsealed because their content no longer matches their digest (or
    /// no longer validates): sealing them would launder an edit into the chain. Verification
    /// reports them.
    pub refused: Vec<u64>,
    /// The head after the batch.
    pub head: ChainHead,
}

/// Links `pending` (in recording order) after `head`.
///
/// Fails only when the chain would exceed [`crate::MAX_SEQ`].
pub fn seal(head: ChainHead, pending: Vec<PendingEntry>) -> Result<SealPlan, AuditError> {
    let mut plan = SealPlan { sealed: Vec::with_capacity(pending.len()), refused: Vec::new(), head };
    for entry in pending {
        if !entry.is_unaltered() {
            plan.refused.push(entry.id);
            continue;
        }
        match next_entry(&plan.head, entry.event) {
            Ok(chained) => {
                plan.head = chained.head();
                plan.sealed.push((entry.id, chained));
            }
            Err(AuditError::SequenceOverflow) => return Err(AuditError::SequenceOverflow),
            Err(_) => plan.refused.push(entry.id),
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, verify_chain};
    use kernel::{Actor, FixedClock, TenantId};
    use time::macros::datetime;

    fn pending(tenant: TenantId, id: u64, clock: &FixedClock) -> PendingEntry {
        let event =
            AuditEvent::new(tenant, Actor::System { component: "test".into() }, Action::PatientRead, "patient", clock)
                .with_resource_id(format!("p-{id}"));
        let recorded = to_record(event).unwrap();
        PendingEntry { id, digest: Some(recorded.digest), event: recorded.event }
    }

    #[test]
    fn a_batch_continues_the_chain_in_recording_order() {
        let tenant = TenantId::new();
        let clock = FixedClock::at(datetime!(2026-12-01 10:00 UTC));
        let first = seal(ChainHead::GENESIS, vec![pending(tenant, 7, &clock), pending(tenant, 9, &clock)]).unwrap();
        let second = seal(first.head, vec![pending(tenant, 8, &clock)]).unwrap();
        assert_eq!(first.sealed.iter().map(|(id, e)| (*id, e.seq)).collect::<Vec<_>>(), [(7, 1), (9, 2)]);
        assert_eq!(second.sealed.iter().map(|(id, e)| (*id, e.seq)).collect::<Vec<_>>(), [(8, 3)]);
        let chain: Vec<_> = first.sealed.iter().chain(&second.sealed).map(|(_, e)| e.clone()).collect();
        assert!(verify_chain(tenant, &chain, &[]).unwrap().is_intact());
    }

    #[test]
    fn an_entry_edited_after_it_was_recorded_is_not_sealed() {
        let tenant = TenantId::new();
        let clock = FixedClock::at(datetime!(2026-12-01 10:00 UTC));
        let mut edited = pending(tenant, 2, &clock);
        edited.event.resource_id = Some("someone-else".into());
        let mut no_digest = pending(tenant, 3, &clock);
        no_digest.digest = None;
        let plan =
            seal(ChainHead::GENESIS, vec![pending(tenant, 1, &clock), edited, no_digest, pending(tenant, 4, &clock)])
                .unwrap();
        assert_eq!(plan.refused, [2, 3]);
        assert_eq!(plan.sealed.iter().map(|(id, e)| (*id, e.seq)).collect::<Vec<_>>(), [(1, 1), (4, 2)]);
    }

    #[test]
    fn the_digest_covers_every_field_but_not_a_seq() {
        let tenant = TenantId::new();
        let clock = FixedClock::at(datetime!(2026-12-01 10:00 UTC));
        let entry = pending(tenant, 1, &clock);
        assert!(entry.is_unaltered());
        let mut other = entry.clone();
        other.event.detail = serde_json::json!({ "n": 1 });
        assert!(!other.is_unaltered());
        let mut other = entry.clone();
        other.event.outcome = crate::Outcome::Failure;
        assert!(!other.is_unaltered());
        // The digest is not a chain hash of any seq: the two encodings have different tags.
        let chained = next_entry(&ChainHead::GENESIS, entry.event.clone()).unwrap();
        assert_ne!(Some(chained.hash), entry.digest);
    }
}
