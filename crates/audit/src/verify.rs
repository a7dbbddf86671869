//! Chain verification: pure, streaming, and precise about *where* and *how* a chain broke.
//!
//! | Tampering                                          | Reported as                                   |
//! |----------------------------------------------------|-----------------------------------------------|
//! | a field of entry k edited                          | `HashMismatch` at k                           |
//! | entry k's stored hash edited                       | `HashMismatch` at k                           |
//! | entry k edited and its own hash recomputed         | `PrevHashMismatch` at k + 1                   |
//! | entry k's `seq` edited                             | `SequenceGap` / `OutOfOrder` at k             |
//! | entry k deleted                                    | `SequenceGap { expected: k, found: k + 1 }`   |
//! | entry k deleted, later ones renumbered             | `HashMismatch` at k                           |
//! | entries k, k+1 swapped (rows keep their seq)       | `SequenceGap { expected: k, found: k + 1 }`   |
//! | contents of k, k+1 swapped (seq column kept)       | `PrevHashMismatch` at k                       |
//! | an entry of another tenant slipped in              | `ForeignTenant` at its position               |
//! | newest entries deleted                             | `TruncatedTail` (needs a checkpoint past them)|
//! | suffix from k rewritten with recomputed hashes     | `CheckpointMismatch` at the first checkpoint ≥ k |
//!
//! The last two are invisible to the chain alone (see [`crate::checkpoint`]).

use crate::chain::{ChainHead, ChainedEntry, Digest, GENESIS_HASH};
use crate::checkpoint::Checkpoint;
use crate::error::AuditError;
use kernel::TenantId;
use serde::{Deserialize, Serialize};

/// How a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakKind {
    /// The entry's content does not hash to its stored hash: a field (or the hash) was edited.
    HashMismatch,
    /// The entry does not link to the previous entry's hash: entries were reordered or replaced,
    /// or the previous entry was edited and re-hashed.
    PrevHashMismatch,
    /// The next entry has a higher seq than expected: entries were deleted (or rows reordered).
    SequenceGap { expected: u64, found: u64 },
    /// The next entry has a lower seq than expected: duplicated or reordered rows.
    OutOfOrder { expected: u64, found: u64 },
    /// The entry belongs to another tenant: a row was moved between chains (or the adapter's
    /// tenant filter is broken).
    ForeignTenant,
    /// A checkpoint pins a different hash at this seq: the chain was rewritten from here or
    /// earlier and re-hashed.
    CheckpointMismatch { checkpoint_seq: u64 },
    /// The chain ends (at `last_seq`, 0 when empty) before a checkpoint's seq: the newest entries
    /// were deleted.
    TruncatedTail { checkpoint_seq: u64, last_seq: u64 },
}

/// The first place a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// The first affected sequence number. For a gap, the first missing one; for a truncated
    /// tail, the first one after the end of the chain.
    pub seq: u64,
    pub kind: BreakKind,
}

/// The outcome of verifying one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationReport {
    pub tenant: TenantId,
    /// Entries examined, including the broken one.
    pub entries_checked: u64,
    /// The last entry that verified (the end of the trustworthy prefix); `None` if none did.
    pub head: Option<ChainHead>,
    pub first_break: Option<Break>,
}

impl VerificationReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Streaming verifier for one tenant's chain: feed entries in stored seq order with
/// [`ChainVerifier::push`], then call [`ChainVerifier::finish`]. Memory is constant in the length
/// of the chain (plus the checkpoints), so an adapter can page through millions of rows.
///
/// Checkpoints are given up front rather than to `finish`: a checkpoint in the middle of the
/// chain is compared when its entry streams past, without keeping every hash. Verify checkpoint
/// signatures ([`Checkpoint::has_valid_signature`]) before handing them in; the verifier trusts
/// them.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    tenant: TenantId,
    /// (seq, hash) sorted by seq; `next_checkpoint` indexes the first not yet reached.
    checkpoints: Vec<(u64, Digest)>,
    next_checkpoint: usize,
    expected_seq: u64,
    prev_hash: Digest,
    head: Option<ChainHead>,
    entries_checked: u64,
    first_break: Option<Break>,
}

impl ChainVerifier {
    /// A verifier for `tenant`'s chain, checking it against `checkpoints` (any order).
    pub fn new(tenant: TenantId, checkpoints: &[Checkpoint]) -> Result<Self, AuditError> {
        let mut pins = Vec::with_capacity(checkpoints.len());
        for checkpoint in checkpoints {
            if checkpoint.tenant != tenant {
                return Err(AuditError::CheckpointTenantMismatch);
            }
            if checkpoint.seq == 0 {
                return Err(AuditError::InvalidCheckpoint);
            }
            pins.push((checkpoint.seq, checkpoint.head_hash));
        }
        pins.sort_unstable();
        Ok(Self {
            tenant,
            checkpoints: pins,
            next_checkpoint: 0,
            expected_seq: 1,
            prev_hash: GENESIS_HASH,
            head: None,
            entries_checked: 0,
            first_break: None,
        })
    }

    /// Checks the next entry. Returns `true` while the chain is intact; after the first break it
    /// returns `false` and ignores further entries, so a pager can stop reading.
    pub fn push(&mut self, entry: &ChainedEntry) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        self.entries_checked += 1;
        match self.check(entry) {
            Ok(()) => {
                self.expected_seq = entry.seq.saturating_add(1);
                self.prev_hash = entry.hash;
                self.head = Some(entry.head());
                true
            }
            Err(kind) => {
                let seq = match kind {
                    BreakKind::SequenceGap { expected, .. } | BreakKind::OutOfOrder { expected, .. } => expected,
                    _ => entry.seq,
                };
                self.first_break = Some(Break { seq, kind });
                false
            }
        }
    }

    /// The checks, cheapest and most specific first: position, tenant, link, content, pins.
    fn check(&mut self, entry: &ChainedEntry) -> Result<(), BreakKind> {
        let expected = self.expected_seq;
        if entry.seq > expected {
            return Err(BreakKind::SequenceGap { expected, found: entry.seq });
        }
        if entry.seq < expected {
            return Err(BreakKind::OutOfOrder { expected, found: entry.seq });
        }
        if entry.event.tenant != self.tenant {
            return Err(BreakKind::ForeignTenant);
        }
        // Link before content: for swapped contents both fail, and "does not link" is the more
        // telling diagnosis; an edited field still links and fails only the content check.
        if entry.prev_hash != self.prev_hash {
            return Err(BreakKind::PrevHashMismatch);
        }
        if entry.compute_hash() != entry.hash {
            return Err(BreakKind::HashMismatch);
        }
        while let Some(&(checkpoint_seq, pinned)) = self.checkpoints.get(self.next_checkpoint)
            && checkpoint_seq == entry.seq
        {
            if pinned != entry.hash {
                return Err(BreakKind::CheckpointMismatch { checkpoint_seq });
            }
            self.next_checkpoint += 1;
        }
        Ok(())
    }

    /// Whether no break has been found so far.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// The report. Also catches a truncated tail: a checkpoint beyond the last entry.
    pub fn finish(self) -> VerificationReport {
        let mut first_break = self.first_break;
        if first_break.is_none()
            && let Some(&(checkpoint_seq, _)) = self.checkpoints.get(self.next_checkpoint)
        {
            let last_seq = self.head.map_or(0, |head| head.seq);
            first_break = Some(Break {
                seq: last_seq.saturating_add(1),
                kind: BreakKind::TruncatedTail { checkpoint_seq, last_seq },
            });
        }
        VerificationReport { tenant: self.tenant, entries_checked: self.entries_checked, head: self.head, first_break }
    }
}

/// Verifies a whole chain held in memory (a convenience over [`ChainVerifier`]).
pub fn verify_chain<'a>(
    tenant: TenantId,
    entries: impl IntoIterator<Item = &'a ChainedEntry>,
    checkpoints: &[Checkpoint],
) -> Result<VerificationReport, AuditError> {
    let mut verifier = ChainVerifier::new(tenant, checkpoints)?;
    for entry in entries {
        if !verifier.push(entry) {
            break;
        }
    }
    Ok(verifier.finish())
}
